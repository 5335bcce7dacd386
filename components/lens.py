"""The Logit lens page's sections and figures.

views/lens.py calls the sections in order: `start` (state and link), `intro`, `controls` (text and
model), `compute` (one model run per model and text, kept in the session), `grid` (the layers x
positions heatmap, with a window over long texts), `position` (one position's final prediction and
a picked token through the layers) and `finish` (the link). Figures: `grid_figure`,
`trajectory_figure`; both carry the real probabilities in their data (what a test reads back).

The work is in playground.lens; nothing here computes a prediction or loads a model except through
components.models. What it leaves out: the routing, the sidebar and the error boundary (app.py).
"""

from __future__ import annotations

import html

import plotly.graph_objects as go
import streamlit as st

from components import held, models, pickers, state
from components.distribution import pct, visible
from playground import lens as core
from playground import links
from playground.errors import PlaygroundError, describe
from playground.links import Link
from playground.registry import DEFAULT_CHAT_MODEL, get_model

AUTO = -1  # position / token not picked yet: the last position, the final layer's second choice


class K:
    TEXT = "lens_text"
    MODEL = "lens_model"
    START = "lens_start"
    POSITION = "lens_position"
    TOKEN = "lens_token"
    TYPED = "lens_typed"
    SCALE = "lens_scale"
    # not widgets
    RESULT = "lens_result"  # kept in the server's memory budget, not in the session state
    RESULT_KEY = "lens_result_key"  # (model, text) the picks were made for
    SIDEBAR_SEEN = "lens_sidebar_seen"


SCALES = ("linear", "log")
PICK = links.Number(AUTO, 1_000_000, integer=True)  # a position or token id: checked against this text and model below
URL = {K.TEXT: Link("text", links.Text()), K.MODEL: Link("model_a", links.Model("generate", engine="hidden_states")),
       K.START: Link("start", links.Number(0, core.MAX_TOKENS.value, integer=True)), K.POSITION: Link("position", PICK),
       K.TOKEN: Link("token", PICK), K.TYPED: Link("typed", links.Text(100)),
       K.SCALE: Link("scale", links.Choice(SCALES))}
WINDOW = int(core.LensSettings().window)
ss = st.session_state


def options() -> list[str]:
    """Causal LMs whose engine gives hidden states (transformers entries)."""
    return [m for m in pickers.for_need("hidden_states") if pickers.can_generate(m)]


def start() -> None:
    side = state.current_model()
    opts = options()
    first = side if side in opts else DEFAULT_CHAT_MODEL
    state.init({K.TEXT: core.DEFAULT_TEXT, K.MODEL: first, K.START: 0, K.POSITION: AUTO, K.TOKEN: AUTO, K.TYPED: "",
                K.SCALE: "linear"}, URL)
    if ss.get(K.SIDEBAR_SEEN) != side:  # follow the sidebar when it changes to a model the lens can read
        if K.SIDEBAR_SEEN in ss and side in opts:
            ss[K.MODEL] = side
        ss[K.SIDEBAR_SEEN] = side
    if ss[K.MODEL] not in opts:
        try:
            ok = pickers.can_generate(ss[K.MODEL]) and get_model(ss[K.MODEL]).capabilities.hidden_states
        except PlaygroundError:
            ok = False
        if not ok:
            ss[K.MODEL] = first


def intro() -> None:
    st.title("Logit lens")
    st.write(
        "A language model turns its last hidden state into next-token scores with a final norm and the "
        "unembedding. The logit lens sends *every* layer's hidden state through that same final step, so you see "
        "what the model would predict if it stopped at that layer, and where the final answer forms."
    )
    with st.expander("How to read this"):
        st.markdown(
            "- **The grid**: one column per position of your text (the input token is on the axis), one row per "
            "layer, the embeddings at the bottom and the model's own output at the top. Each cell shows the token "
            "that layer would predict *next*, after that position; the **colour** is its probability (dark: sure, "
            "pale: unsure). The top row is the model's real next-token distribution.\n"
            "- **The bottom row** (the embeddings) often predicts the input token itself: the unembedding of "
            "SmolLM2 and Gemma is the embedding matrix, so an untouched state points back at its own token.\n"
            "- **One position**: pick a position and a token. The chart shows, layer by layer, the probability of "
            "the model's final prediction there and of your token (hover for its rank among the whole vocabulary).\n"
            "- **Try**: the default text ends with *the city of*: watch *Paris* appear in the last few layers and "
            "climb. Follow *London* or *the* for comparison, or type a token. Compare SmolLM2 with Gemma 3: where "
            "in the depth does each settle on its answer?\n"
            f"- **Bounds**: the lens reads {core.MAX_TOKENS.text}; each layer's states go through the head in blocks, "
            "so Gemma's 262,144-token vocabulary is never held for every layer at once."
        )


def controls() -> str:
    opts = options()
    if ss[K.MODEL] not in opts:
        opts.append(ss[K.MODEL])
    st.text_area("Text", key=K.TEXT, height=80, help=f"The model reads this text; {core.MAX_TOKENS.text}.")
    st.selectbox("Model", opts, key=K.MODEL, format_func=pickers.label, help="Causal LMs whose weights run here "
                 "(transformers): the lens needs every layer's hidden state.")
    note = pickers.left_out("hidden_states")
    if note:
        st.caption(note)
    return ss[K.MODEL]


def compute(model_id: str) -> tuple[object, core.LogitLens]:
    """The lens of (model, text), run once and kept; st.info / st.error and stop when there is none."""
    text = ss[K.TEXT]
    if not text.strip():
        st.info("Type a text above to see what each layer predicts.")
        st.stop()
    lm = models.require(model_id)
    kept = held.get(K.RESULT)  # in the server's memory budget (components/held.py); None if it was dropped
    if kept is not None and kept[0] == (lm.spec.id, text):
        return lm, kept[1]
    held.drop(K.RESULT)  # free the old states before making new ones
    last_key = ss.get(K.RESULT_KEY)
    try:
        with held.reserve(K.RESULT, core.kept_bytes(lm, text), "these logit-lens states", lm) as room, \
                st.status(f"Running {lm.spec.label} once and reading every layer…", expanded=True) as status:
            bar = st.progress(0.0)
            result = core.run(lm, text, progress=lambda f, msg: bar.progress(min(max(f, 0.0), 1.0), text=msg))
            room.fill(((lm.spec.id, text), result), held.size_of(result))
            status.update(label=f"{result.num_rows} rows × {result.num_tokens} positions read", state="complete",
                          expanded=False)
    except PlaygroundError as exc:
        st.error(describe(exc))
        st.stop()
    except Exception as exc:  # noqa: BLE001 - shown, never a traceback
        st.error(describe(exc))
        st.stop()
    ss[K.RESULT_KEY] = (lm.spec.id, text)
    if last_key is not None and last_key != (lm.spec.id, text):  # a new text or model: open on the last position again
        ss[K.POSITION], ss[K.TOKEN], ss[K.START] = AUTO, AUTO, 0
    return lm, result


def _settle(lens: core.LogitLens) -> tuple[int, int]:
    """Fill AUTO picks and clamp the window and the position into this text (before the widgets exist)."""
    t = lens.num_tokens
    size = min(WINDOW, t)
    if ss[K.POSITION] == AUTO or not 0 <= int(ss[K.POSITION]) < t:
        ss[K.POSITION] = t - 1
    pos = int(ss[K.POSITION])
    first = min(max(int(ss[K.START]), 0), t - size)
    if not first <= pos < first + size:
        first = min(max(pos - size + 1, 0), t - size)
    ss[K.START] = first
    return first, first + size


def _moved_window() -> None:
    """The window slider moved: keep the picked position inside it."""
    first, size = int(ss[K.START]), WINDOW
    pos = int(ss.get(K.POSITION, AUTO))
    if pos != AUTO and not first <= pos < first + size:
        ss[K.POSITION] = min(max(pos, first), first + size - 1)


def grid(lm, lens: core.LogitLens) -> None:
    st.subheader("Every layer's guess")
    where = "already through the final norm" if lens.output_was_normed else "before the final norm (normed here)"
    st.caption(f"{lm.spec.label}: {lens.num_tokens:,} positions × {lens.num_rows} rows (embeddings and "
               f"{lens.num_rows - 1} layers), each through `{lens.norm_name}` and the unembedding "
               f"(vocabulary {lens.vocab_size:,}). transformers gave the last layer's state {where}.")
    first, stop = _settle(lens)
    if lens.num_tokens > WINDOW:
        st.slider("First position shown", 0, lens.num_tokens - WINDOW, key=K.START, on_change=_moved_window,
                  help=f"The grid shows {WINDOW} positions at a time; the text has {lens.num_tokens:,}.")
        first, stop = int(ss[K.START]), int(ss[K.START]) + WINDOW
    st.plotly_chart(grid_figure(lens, first, stop, int(ss[K.POSITION])), key="lens_grid",
                    config={"displayModeBar": False})


def position(lm, lens: core.LogitLens) -> None:
    st.subheader("One position through the layers")
    first, stop = int(ss[K.START]), min(int(ss[K.START]) + WINDOW, lens.num_tokens)
    labels = lens.labels
    c1, c2, c3, c4 = st.columns([3, 3, 2, 2])
    shown = list(range(first, stop))
    c1.selectbox("Position", shown, key=K.POSITION,
                 format_func=state.labels(shown, lambda i: f"·{i}  {visible(labels[i])}  → {visible(lens.top_texts[-1][i])}"),
                 help="The prediction after this token (the positions the grid shows).")
    pos = int(ss[K.POSITION])
    cands = core.candidates(lens, pos, lm)
    if ss[K.TOKEN] not in cands:
        ss[K.TOKEN] = cands[1] if len(cands) > 1 else cands[0]
    final_id = int(lens.top_ids[-1, pos])
    c2.selectbox("Token to follow", cands, key=K.TOKEN,
                 format_func=state.labels(cands, lambda i: visible(lm.tokenizer.decode([i]))
                                          + ("  (the final prediction)" if i == final_id else "")),
                 help="The output layer's top tokens here, then each layer's own top token.")
    c3.text_input("Or type a token", key=K.TYPED, max_chars=100, help="Its first token is followed, e.g. ' London'.")
    c4.radio("Probability axis", SCALES, key=K.SCALE, horizontal=True,
             help="A log axis shows the small probabilities of early layers.")
    picked = int(ss[K.TOKEN])
    if ss[K.TYPED]:
        try:
            picked, note = core.token_of(lm, ss[K.TYPED])
            st.caption((note + " " if note else "") + "The typed token is followed; empty the box to use the picker.")
        except PlaygroundError as exc:
            st.error(describe(exc))
    final = core.follow(lm, lens, pos, final_id)
    other = core.follow(lm, lens, pos, picked) if picked != final_id else None
    st.plotly_chart(trajectory_figure(lens, final, other, ss[K.SCALE]), key="lens_trajectory", config={"displayModeBar": False})
    settled = lens.first_row_with_final(pos)
    st.markdown(
        f"After **·{pos} {visible(labels[pos])}** the model predicts **{visible(final.text)}** "
        f"({pct(float(final.probs[-1]))}). It is the top token from **{lens.row_name(settled)}** on"
        + (f" (rank {int(final.ranks[0]):,} at the embeddings)." if settled > 0 else ".")
    )
    if other is not None:
        best = int(other.probs.argmax())
        st.markdown(f"**{visible(other.text)}**: {pct(float(other.probs[-1]))} at the output, rank "
                    f"{int(other.ranks[-1]):,}; highest at {lens.row_name(best)} ({pct(float(other.probs[best]))}).")


def finish() -> None:
    state.to_url(URL)


# --- figures ----------------------------------------------------------------------------------


def _esc(text: str) -> str:
    """Text safe for plotly, which reads it as HTML ('<bos>' would vanish); quotes stay as they are."""
    return html.escape(text, quote=False)


def _cell(text: str, limit: int = 9) -> str:
    shown = visible(text)
    shown = shown if len(shown) <= limit else shown[: limit - 1] + "…"
    return _esc(shown)


def grid_figure(lens: core.LogitLens, first: int, stop: int, position: int | None = None) -> go.Figure:
    """Rows (embeddings at the bottom) x positions first..stop-1: colour = top probability, text = top token."""
    z = lens.top_probs[:, first:stop].numpy()  # (rows, W)
    cols = list(range(first, stop))
    rows = [lens.row_name(r) for r in range(lens.num_rows)]
    text = [[_cell(lens.top_texts[r][c]) for c in cols] for r in range(lens.num_rows)]
    hover = [[f"after ·{c} {_esc(visible(lens.labels[c]))}<br>{rows[r]} predicts "
              f"{_esc(visible(lens.top_texts[r][c]))} ({pct(float(lens.top_probs[r, c]))})<br>"
              f"the final prediction {_esc(visible(lens.top_texts[-1][c]))}: {pct(float(lens.final_probs[r, c]))}"
              for c in cols] for r in range(lens.num_rows)]
    x = [f"·{c} {_esc(visible(lens.labels[c]))[:12]}" for c in cols]
    fig = go.Figure(go.Heatmap(z=z, x=x, y=rows, text=text, texttemplate="%{text}", textfont=dict(size=10),
                               hovertext=hover, hovertemplate="%{hovertext}<extra></extra>", zmin=0, zmax=1,
                               colorscale="Blues", colorbar=dict(title="p", thickness=10, len=0.6), name="lens"))
    if position is not None and first <= position < stop:
        i = position - first
        fig.add_shape(type="rect", x0=i - 0.5, x1=i + 0.5, y0=-0.5, y1=lens.num_rows - 0.5,
                      line=dict(color="#d62728", width=2))
    fig.update_layout(height=max(360, 22 * lens.num_rows + 120), margin=dict(l=10, r=10, t=10, b=10),
                      xaxis=dict(side="bottom", tickangle=-45, type="category"), yaxis=dict(type="category"))
    return fig


def trajectory_figure(lens: core.LogitLens, final: core.Trajectory, other: core.Trajectory | None,
                      scale: str = "linear") -> go.Figure:
    """Probability through the rows at one position: the final prediction and the picked token."""
    rows = [lens.row_name(r) for r in range(lens.num_rows)]
    fig = go.Figure()
    for tr, colour in ((final, "#1f77b4"), (other, "#d62728")):
        if tr is None:
            continue
        fig.add_trace(go.Scatter(
            x=list(range(lens.num_rows)), y=tr.probs.tolist(), mode="lines+markers", line=dict(color=colour),
            name=_esc(visible(tr.text)) + (" (final prediction)" if tr is final else ""),
            customdata=[[rows[r], int(tr.ranks[r])] for r in range(lens.num_rows)],
            hovertemplate="%{customdata[0]}: %{y:.1%}, rank %{customdata[1]:,}<extra>" + _esc(visible(tr.text)) + "</extra>",
        ))
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=30, b=10), yaxis=dict(title="probability", range=[0, 1.02]) if scale == "linear" else
                      dict(title="probability (log)", type="log", range=[-7, 0.05]),
                      xaxis=dict(title="layer (0 = embeddings)", dtick=max(1, lens.num_rows // 15)),
                      legend=dict(orientation="h", y=1.1))
    return fig
