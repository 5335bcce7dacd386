"""Drawing an attribution: the input text shaded by each token's score, a table of the values, the
method in a sentence or two, and integrated gradients' completeness check and path.

`shaded_html(result)` is the text (blue: the token pushed f up, red: down; the stronger the
colour, the larger the score against the largest one shown), `legend_html()` its key,
`table(result)` the values, `completeness(result)` the sentence that compares the scores' sum
with f(input) - f(baseline), `path_figure(result)` f along the path with the points where the
gradient was taken. `explain(method)` says what a method computes.

The work is in playground.attribution; nothing here computes a score. What it leaves out: the
section that runs it on the Next token page (components.next_token_inside).
"""

from __future__ import annotations

import html

import plotly.graph_objects as go

from components.distribution import visible
from playground import attribution as core

POSITIVE = (33, 102, 172)  # blue: raised f
NEGATIVE = (214, 39, 40)  # red: lowered f

EXPLAIN = {
    "gradient_x_input": (
        "**Gradient × input**: how fast f changes as each token's input embedding grows, times that embedding "
        "(summed over its dimensions). One forward and one backward pass; a first-order reading whose scores "
        "need not add up to anything."
    ),
    "integrated_gradients": (
        "**Integrated gradients**: the same gradient, averaged along a straight path from a *baseline* (the "
        "text's tokens replaced by the pad token {pad}; the first token and special tokens kept, so they get 0) "
        "to your text, times the change of each embedding. The scores add up to f(text) − f(baseline) when the "
        "path is sampled finely enough; the check below says how close they come."
    ),
    "attention_rollout": (
        "**Attention rollout** (Abnar & Zuidema): every layer's attention averaged over its heads, mixed half "
        "and half with the residual connection, and multiplied through the layers: how much of what the last "
        "position reads comes from each input token. It ignores the target (the same for every next token) "
        "and reads only attention, not what the layers do with it."
    ),
}


def explain(method: str, pad: str = "") -> str:
    return EXPLAIN[method].format(pad=f"`{pad}`" if pad else "")


def _scale(result: core.Attribution) -> float:
    """The score that gets the strongest colour. Rollout gives the first token (the attention sink)
    nearly everything, so there the scale comes from the other tokens."""
    s = result.scores.abs()
    if result.method == "attention_rollout" and len(s) > 1:
        s = s[1:]
    m = float(s.max()) if len(s) else 0.0
    return m if m > 0 else 1.0


def colour(score: float, scale: float) -> str:
    a = min(abs(score) / scale, 1.0) * 0.85
    r, g, b = POSITIVE if score >= 0 else NEGATIVE
    return f"rgba({r},{g},{b},{a:.3f})"


def shaded_html(result: core.Attribution) -> str:
    """The input tokens in order, each on a background coloured by its score (hover: the value)."""
    scale = _scale(result)
    unit = "" if result.method == "attention_rollout" else " nats"
    spans = []
    for i, (label, score) in enumerate(zip(result.labels, result.scores.tolist())):
        tip = f"·{i} {visible(label)}: {score:+.4f}{unit}"
        spans.append(
            f'<span title="{html.escape(tip)}" data-score="{score:.6g}" style="background:{colour(score, scale)};'
            f'border-radius:3px;padding:0.05em 0;white-space:pre-wrap">{html.escape(label)}</span>'
        )
    target = html.escape(visible(result.target_text))
    spans.append(f'<span style="border:1px dashed #6a51a3;border-radius:3px;padding:0 0.2em;margin-left:0.1em">'
                 f'{target}</span>')
    return ('<div class="attribution-text" style="font-family:ui-monospace,Menlo,monospace;line-height:2.0;'
            'padding:0.6em 0.8em;border:1px solid #e4e1f3;border-radius:8px;background:#fcfbff">'
            + "".join(spans) + "</div>")


def legend_html(result: core.Attribution) -> str:
    scale = _scale(result)
    stops = "".join(
        f'<span style="background:{colour(v * scale, scale)};padding:0 0.5em;border-radius:3px">{v * scale:+.2g}</span> '
        for v in (-1.0, -0.5, -0.1, 0.1, 0.5, 1.0)
    )
    what = ("share of what the last position reads" if result.method == "attention_rollout"
            else f"nats of {html.escape(result.objective)}")
    note = " (the first token, the attention sink, is left out of the scale)" if result.method == "attention_rollout" else ""
    return (f'<div style="font-size:0.8em;color:#55546a">blue raised it, red lowered it: {stops} {what}{note}'
            ' · dashed: the token explained</div>')


def table(result: core.Attribution) -> list[dict]:
    total = float(result.scores.abs().sum()) or 1.0
    return [{"position": i, "token": visible(label), "id": tid, "score": float(f"{score:.5g}"),
             "share of |scores|": round(abs(score) / total, 4)}
            for i, (label, tid, score) in enumerate(zip(result.labels, result.input_ids, result.scores.tolist()))]


def completeness(result: core.Attribution) -> str | None:
    """'The scores add up to 14.88; f(text) − f(baseline) = -1.70 − (-16.63) = 14.93: off by -0.05 (0.3%).'"""
    gap = result.completeness_gap
    if gap is None:
        return None
    delta = result.f_input - result.f_baseline
    rel = abs(gap) / abs(delta) if delta else float("inf")
    verdict = ("close: the path is sampled finely enough" if rel <= 0.02 else
               "not close: f jumps along the path between the points; more steps often help, and until "
               "then read the scores as rough")
    return (f"**Completeness**: the scores add up to **{result.total:.3f}**; f(text) − f(baseline) = "
            f"{result.f_input:.3f} − ({result.f_baseline:.3f}) = **{delta:.3f}** nats: off by {gap:+.3f} "
            f"({rel:.1%}), {verdict}. {result.steps} points on the path.")


def path_figure(result: core.Attribution) -> go.Figure:
    """f along the path from the baseline (0) to the text (1), a marker where the gradient was taken."""
    p = result.path
    fig = go.Figure(go.Scatter(x=p.alphas.tolist(), y=p.f.tolist(), mode="lines+markers", name="f",
                               customdata=p.slope.tolist(), line=dict(color="#6a51a3"),
                               hovertemplate="a = %{x:.4f}<br>f = %{y:.3f}<br>slope df/da = %{customdata:.2f}"
                                             "<extra></extra>"))
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis=dict(title="a: 0 = baseline, 1 = your text", range=[-0.02, 1.02]),
                      yaxis=dict(title="f (nats)"), showlegend=False)
    return fig
