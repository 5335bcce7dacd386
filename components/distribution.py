"""Figures for the next-token page: the top-N bar chart, temperatures side by side, the walk, the sweep.

Each function takes a result from `playground.stepping` (`NextTokenView`, `Walk`, `Sweep`)
and returns a plotly figure or an HTML string; none runs a model or does sampling math.
"""

from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from playground.stepping import NextTokenView, Sweep, Walk

KEPT = "#6c4cf5"  # the theme's primary colour
DROPPED = "#c9c9d1"
BEFORE = "#1c1b22"
HOW_COLOURS = {"sampled": "#6c4cf5", "greedy": "#2a9d8f", "picked": "#e76f51"}
PROB_SCALE = "RdYlGn"  # red: the model thought it unlikely; green: likely


def visible(text: str) -> str:
    """A token with its whitespace made visible: ' the' -> '␣the', '\\n' -> '↵'."""
    if text == "":
        return "∅"
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")


def pct(p: float) -> str:
    if p == 0:
        return "0%"
    if p < 0.001:
        return f"{p:.1e}"
    return f"{100 * p:.1f}%"


def _labels(v: NextTokenView) -> list[str]:
    # the rank keeps labels unique when two tokens look alike
    return [f"{visible(r.text)}  #{r.rank}" for r in v.rows]


def _bar_traces(v: NextTokenView, show_legend: bool = True) -> list[go.BaseTraceType]:
    labels = _labels(v)
    x = [r.p_after if r.kept else r.p_before for r in v.rows]
    colours = [KEPT if r.kept else DROPPED for r in v.rows]
    forbidden = getattr(v, "forbidden", frozenset())  # a constrained view (playground.constrain): hatched grey
    hover = [
        f"<b>{html.escape(visible(r.text))}</b> (id {r.id}, rank {r.rank})<br>"
        f"model: {pct(r.p_model)}<br>after temperature: {pct(r.p_before)}<br>"
        + ("forbidden by the constraint" if r.id in forbidden
           else f"after filters: {pct(r.p_after)}" if r.kept else "dropped by the filters")
        for r in v.rows
    ]
    bars = go.Bar(
        x=x, y=labels, orientation="h", marker_color=colours, text=[pct(p) if p >= 1e-4 else "" for p in x],
        marker_pattern_shape=["/" if r.id in forbidden else "" for r in v.rows] if forbidden else None,
        textposition=["inside" if p >= 0.6 else "outside" for p in x], insidetextanchor="end",
        insidetextfont=dict(color="white"), constraintext="none",
        hovertext=hover, hoverinfo="text", name="after filters (renormalised); grey: dropped", showlegend=show_legend,
        cliponaxis=False,
    )
    ticks = go.Scatter(
        x=[r.p_before for r in v.rows], y=labels, mode="markers",
        marker=dict(symbol="line-ns-open", size=14, color=BEFORE, line=dict(width=2)),
        name="before filters (after temperature)", hoverinfo="skip", showlegend=show_legend,
    )
    return [bars, ticks]


def top_tokens(v: NextTokenView, title: str | None = None, height: int | None = None) -> go.Figure:
    """Horizontal bars of the top tokens: survivors renormalised, dropped ones greyed."""
    top = max([r.p_after if r.kept else r.p_before for r in v.rows] + [r.p_before for r in v.rows] + [1e-9])
    # the layout goes in whole at construction: update_layout costs as much as the rest of a re-render
    return go.Figure(data=_bar_traces(v), layout=dict(
        title=title, height=height or max(260, 24 * len(v.rows) + 110), margin=dict(l=10, r=40, t=40 if title else 10, b=10),
        xaxis=dict(title="probability", tickformat=".0%", range=[0, min(1.0, top * 1.25)]),
        yaxis=dict(autorange="reversed", automargin=True),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0), bargap=0.25,
    ))


def temperatures(views: list[tuple[float, NextTokenView]], height: int | None = None) -> go.Figure:
    """One panel per temperature over the same logits, sharing the token axis.

    The panels are laid out by hand (x-axis domains over one shared y-axis): plotly's
    make_subplots costs more than the whole re-render otherwise.
    """
    k = max(len(views), 1)
    gap = 0.035
    width = (1 - gap * (k - 1)) / k
    traces, layout, annotations = [], {}, []
    for i, (t, v) in enumerate(views):
        axis = "x" if i == 0 else f"x{i + 1}"
        lo = i * (width + gap)
        for tr in _bar_traces(v, show_legend=(i == 0)):
            if isinstance(tr, go.Bar):  # narrow panels: label only the bars that can be read
                tr.text = [pct(p) if p >= 0.01 else "" for p in tr.x]
                tr.textfont = dict(size=10)
            tr.xaxis = axis
            traces.append(tr)
        layout["xaxis" if i == 0 else f"xaxis{i + 1}"] = dict(
            domain=[lo, lo + width], range=[0, 1.0], tickvals=[0, 0.5, 1], ticktext=["0", "50%", "100%"], anchor="y")
        annotations.append(dict(
            x=lo + width / 2, y=1.0, xref="paper", yref="paper", yanchor="bottom", showarrow=False,
            text=f"T = {t:g}" + (" (greedy)" if t == 0 else "")
                 + f"<br><sup>{v.entropy_bits:.2f} bits, {v.n_kept:,} kept</sup>", font=dict(size=14),
        ))
    n = max((len(v.rows) for _, v in views), default=1)
    layout.update(
        height=height or max(300, 22 * n + 170), margin=dict(l=10, r=10, t=100, b=10), bargap=0.2,
        yaxis=dict(autorange="reversed", automargin=True), annotations=annotations,
        legend=dict(orientation="h", yanchor="bottom", y=1.14, xanchor="left", x=0),
    )
    return go.Figure(data=traces, layout=layout)


def prob_colour(p: float) -> str:
    return sample_colorscale(PROB_SCALE, [max(0.0, min(1.0, p))])[0]


def walk_html(prompt: str, walk: Walk, href=None) -> str:
    """The text so far: the prompt in grey, each chosen token on a background coloured by its probability.

    Hovering a token shows its probability, rank, how it was chosen and the model's top choices
    there; a small number after each token is its rank. `href(i)`, if given, is the link of the
    prefix before step i (0-based): a click on a token opens the walk as it was when it was chosen.
    """
    spans = [f'<span style="color:#77768a;white-space:pre-wrap">{html.escape(prompt)}</span>']
    for i, s in enumerate(walk.steps, start=1):
        colour = prob_colour(s.p_model).replace("rgb(", "rgba(").replace(")", ",0.45)")
        border = HOW_COLOURS.get(s.how, BEFORE)
        tip = f"step {i}: {visible(s.text)} — model {pct(s.p_model)}, rank {s.rank}, {s.how}"
        if s.alternatives:
            tip += "\nthe model's top choices here:\n" + "\n".join(f"  {visible(a)}  {pct(p)}" for a, p in s.alternatives)
        link = href(i - 1) if href is not None else None
        if link:
            tip += "\nclick: open the walk at this point (a new tab)"
        tip = html.escape(tip).replace("\n", "&#10;")
        span = (f'<span title="{tip}" style="background:{colour};border-bottom:2px solid {border};'
                f'border-radius:3px;white-space:pre-wrap">{html.escape(s.text).replace(chr(10), "&#10;")}'
                f'<sub style="color:#55546a;font-size:0.65em">{s.rank}</sub></span>')
        if link:
            span = (f'<a href="{html.escape(link, quote=True)}" target="_blank" '
                    f'style="color:inherit;text-decoration:none">{span}</a>')
        spans.append(span)
    return (
        '<div style="font-family:ui-monospace,Menlo,monospace;line-height:1.9;padding:0.6em 0.8em;'
        'border:1px solid #e4e1f3;border-radius:8px;background:#fcfbff">' + "".join(spans) + "</div>"
    )


def walk_legend() -> str:
    stops = "".join(
        f'<span style="background:{prob_colour(p).replace("rgb(", "rgba(").replace(")", ",0.45)")};'
        f'padding:0 0.5em;border-radius:3px">{int(p * 100)}%</span> '
        for p in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
    )
    hows = " ".join(
        f'<span style="border-bottom:2px solid {c};padding:0 0.3em">{h}</span>' for h, c in HOW_COLOURS.items()
    )
    return (f'<div style="font-size:0.8em;color:#55546a">background: the model\'s probability {stops}'
            f' · underline: {hows} · small number: rank</div>')


def walk_steps(walk: Walk) -> go.Figure:
    """The model's probability of each chosen token, step by step (colour: how it was chosen)."""
    xs = list(range(1, len(walk.steps) + 1))
    fig = go.Figure()
    for how, colour in HOW_COLOURS.items():
        pts = [(x, s) for x, s in zip(xs, walk.steps) if s.how == how]
        if not pts:
            continue
        fig.add_trace(go.Bar(
            x=[x for x, _ in pts], y=[s.p_model for _, s in pts], name=how, marker_color=colour,
            hovertext=[f"{html.escape(visible(s.text))}: {pct(s.p_model)}, rank {s.rank}" for _, s in pts],
            hoverinfo="text",
        ))
    fig.update_layout(
        height=220, margin=dict(l=10, r=10, t=10, b=10), barmode="overlay",
        xaxis=dict(title="step", dtick=1 if len(xs) <= 30 else None),
        yaxis=dict(title="model's probability", tickformat=".0%", range=[0, 1]),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
    )
    return fig


def sweep_chart(sw: Sweep) -> go.Figure:
    """Mean log-probability (left axis) and distinct-1 / distinct-2 (right axis) against temperature."""
    ts = [p.temperature for p in sw.points]
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=ts, y=[p.mean_logprob for p in sw.points], mode="lines+markers", name="mean log-probability (per token)",
        line=dict(color=KEPT, width=3), hovertemplate="T = %{x}<br>mean log-prob %{y:.3f}<extra></extra>",
    ))
    for name, key, dash in (("distinct-1", "distinct_1", "dot"), ("distinct-2", "distinct_2", "dash")):
        fig.add_trace(go.Scatter(
            x=ts, y=[getattr(p, key) for p in sw.points], mode="lines+markers", name=name, yaxis="y2",
            line=dict(color="#2a9d8f", dash=dash), hovertemplate=f"T = %{{x}}<br>{name} %{{y:.2f}}<extra></extra>",
        ))
    fig.update_layout(
        height=340, margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
        xaxis=dict(title="temperature", tickvals=ts),
        yaxis=dict(title="mean log-probability (nats)"),
        yaxis2=dict(title="distinct n-grams / all", range=[0, 1.05], overlaying="y", side="right", showgrid=False,
                    tickmode="array", tickvals=[0, 0.25, 0.5, 0.75, 1.0]),
    )
    return fig


def server_top(dist, title: str | None = None) -> go.Figure:
    """A server's top-N next tokens (playground.engines.TopDistribution) as bars, with every token it
    did not send as one grey 'other' bar: the server returns the top only, and the chart says so."""
    import math

    labels = [visible(c.text) for c in dist.choices] + ["(every other token)"]
    values = [math.exp(c.logprob) for c in dist.choices] + [dist.other]
    colours = ["#6c4cf5"] * len(dist.choices) + ["#c4c2cc"]
    fig = go.Figure(go.Bar(x=values[::-1], y=labels[::-1], orientation="h", marker_color=colours[::-1],
                           text=[pct(v) for v in values[::-1]], textposition="outside",
                           hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_layout(height=max(220, 26 * len(labels) + 60), margin=dict(t=40 if title else 10, b=10, l=10, r=40),
                      xaxis=dict(range=[0, min(1.0, max(values) * 1.25 + 0.02)], tickformat=".0%",
                                 title="probability"), title=title)
    return fig
