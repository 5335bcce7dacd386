"""Two sections of the Next token page that look inside the model at the current prefix.

- `lens(lm, ids)`: the logit lens of the prefix (playground.lens, drawn with
  components.lens's figures): every layer's guess at every position as a layers x positions grid,
  and at a chosen position (the next token's, by default) the probability of the final prediction
  and of a picked token through the layers. Its top row at the last position is the page's
  distribution. Off until the person turns it on (it runs the model once per prefix, and reads
  every layer through the unembedding).
- `attribution(lm, ids, view)`: how much each token of the prefix contributed to a candidate next
  token (the top one by default), by gradient x input, integrated gradients or attention rollout
  (playground.attribution), optionally "rather than" another of the bars' tokens; drawn with
  components.attribution. Gradient x input and rollout run as soon as they are picked (one pass);
  integrated gradients waits for its button (one pass per few steps).

Each section keeps its one result in the session, keyed by what made it, and never stops the page
(the sections after it still draw). The page calls them with its first model; the second model is
left out. What it leaves out: the page's own walk, bars and settings (views/next_token.py).
"""

from __future__ import annotations

import streamlit as st

from components import attribution as draw
from components import state
from components.distribution import pct, visible
from components.lens import WINDOW, grid_figure, trajectory_figure
from playground import attribution as attr
from playground import lens as lens_core
from playground import links
from playground.errors import PlaygroundError, describe
from playground.links import Link
from playground.loading import LoadedModel
from playground.options import bounds

NO_CONTRAST = -1


class K:
    LENS_ON = "next_token_lens_on"
    LENS_START = "next_token_lens_start"
    LENS_POSITION = "next_token_lens_position"
    LENS_TOKEN = "next_token_lens_token"
    ATTR_ON = "next_token_attr_on"
    ATTR_METHOD = "next_token_attr_method"
    ATTR_TARGET = "next_token_attr_target"
    ATTR_CONTRAST = "next_token_attr_contrast"
    ATTR_STEPS = "next_token_attr_steps"
    ATTR_RUN = "next_token_attr_run"
    # not widgets
    LENS_RESULT = "next_token_lens_result"
    ATTR_RESULT = "next_token_attr_result"


URL = {K.LENS_ON: Link("lens", links.Flag()), K.ATTR_ON: Link("why", links.Flag()),
       K.ATTR_METHOD: Link("why_method", links.Choice(attr.METHODS)),
       K.ATTR_STEPS: Link("why_steps", links.Number.of(attr.AttributionSettings, "steps"))}
ss = st.session_state


def _weights_here(lm, what: str) -> bool:
    """True for a transformers model; else an info that says which entry to pick."""
    if isinstance(lm, LoadedModel):
        return True
    st.info(f"{what} needs the model's weights in PyTorch: {lm.spec.label} runs on {lm.engine}. Pick the "
            f"transformers entry of this model above to see it.", icon=":material/info:")
    return False


# --- the logit lens of the prefix --------------------------------------------------------------


def _lens_of(lm: LoadedModel, ids: tuple[int, ...]) -> lens_core.LogitLens | None:
    held = ss.get(K.LENS_RESULT)
    if held is not None and held[0] == (lm.spec.id, ids):
        return held[1]
    ss.pop(K.LENS_RESULT, None)  # free the old states first
    try:
        with st.status(f"Reading every layer of {lm.spec.label} over {len(ids):,} tokens…", expanded=True) as status:
            bar = st.progress(0.0)
            result = lens_core.logit_lens(lm, ids, progress=lambda f, m: bar.progress(min(max(f, 0.0), 1.0), text=m))
            status.update(label=f"{result.num_rows} rows × {result.num_tokens} positions read", state="complete",
                          expanded=False)
    except PlaygroundError as exc:
        st.error(describe(exc))
        return None
    ss[K.LENS_RESULT] = ((lm.spec.id, ids), result)
    ss[K.LENS_POSITION], ss[K.LENS_TOKEN] = len(ids) - 1, None  # a new prefix: open on the next token again
    ss[K.LENS_START] = max(0, len(ids) - WINDOW)
    return result


def lens(lm, ids) -> None:
    """The logit lens section for the prefix `ids` (the page's walk so far)."""
    state.init({K.LENS_ON: False}, URL)
    st.subheader("Every layer's guess")
    st.toggle("Show the logit lens for this prefix", key=K.LENS_ON,
              help="Each layer's hidden state through the final norm and the unembedding: what the model would "
                   "predict if it stopped there. One model run per prefix.")
    state.to_url(URL)
    if not ss[K.LENS_ON]:
        st.caption("Turn it on to see, layer by layer, where the prediction in the bars above forms.")
        return
    if not _weights_here(lm, "The logit lens"):
        return
    ids = tuple(int(i) for i in ids)
    result = _lens_of(lm, ids)
    if result is None:
        return
    t = result.num_tokens
    first = min(max(int(ss.get(K.LENS_START, 0)), 0), max(t - WINDOW, 0))
    if t > WINDOW:
        ss[K.LENS_START] = first
        st.slider("First position shown", 0, t - WINDOW, key=K.LENS_START,
                  help=f"The grid shows {WINDOW} positions at a time; the prefix has {t:,}.")
        first = int(ss[K.LENS_START])
    stop = min(first + WINDOW, t)
    positions = list(range(first, stop))
    if ss.get(K.LENS_POSITION) not in positions:
        ss[K.LENS_POSITION] = positions[-1]
    c1, c2 = st.columns(2)
    c1.selectbox("Position", positions, key=K.LENS_POSITION,
                 format_func=state.labels(positions, lambda i: f"·{i}  {visible(result.labels[i])}  → "
                                          f"{visible(result.top_texts[-1][i])}" + ("  (the next token)" if i == t - 1 else "")),
                 help="The prediction after this token; the last one is the next token of the bars above.")
    pos = int(ss[K.LENS_POSITION])
    cands = lens_core.candidates(result, pos, lm)
    if ss.get(K.LENS_TOKEN) not in cands:
        ss[K.LENS_TOKEN] = cands[1] if len(cands) > 1 else cands[0]
    final_id = int(result.top_ids[-1, pos])
    c2.selectbox("Token to follow", cands, key=K.LENS_TOKEN,
                 format_func=state.labels(cands, lambda i: visible(lm.tokenizer.decode([i]))
                                          + ("  (the final prediction)" if i == final_id else "")),
                 help="The output layer's top tokens here, then each layer's own top token.")
    st.plotly_chart(grid_figure(result, first, stop, pos), key="next_token_lens_grid", config={"displayModeBar": False})
    final = lens_core.follow(lm, result, pos, final_id)
    picked = int(ss[K.LENS_TOKEN])
    other = lens_core.follow(lm, result, pos, picked) if picked != final_id else None
    st.plotly_chart(trajectory_figure(result, final, other), key="next_token_lens_trajectory",
                    config={"displayModeBar": False})
    settled = result.first_row_with_final(pos)
    line = (f"After **·{pos} {visible(result.labels[pos])}** the model predicts **{visible(final.text)}** "
            f"({pct(float(final.probs[-1]))}), its top token from **{result.row_name(settled)}** on.")
    if pos == t - 1:
        line += " The top row here is the distribution in the bars above."
    if other is not None:
        best = int(other.probs.argmax())
        line += (f" **{visible(other.text)}**: {pct(float(other.probs[-1]))} at the output, highest at "
                 f"{result.row_name(best)} ({pct(float(other.probs[best]))}).")
    st.markdown(line)
    st.caption(f"{result.num_rows} rows: the embeddings and {result.num_rows - 1} layers, each through "
               f"`{result.norm_name}` and the unembedding. The Logit lens page reads any text this way.")


# --- attribution --------------------------------------------------------------------------------


def _attr_key(lm, ids, method, target, contrast, steps) -> tuple:
    return (lm.spec.id, tuple(int(i) for i in ids), method, int(target), contrast,
            steps if method == "integrated_gradients" else None)


def _run_attr(lm, ids, method, target, contrast, steps, key) -> None:
    try:
        if method == "integrated_gradients":
            with st.status(f"Integrated gradients over {len(ids):,} tokens at {steps} steps…", expanded=True) as status:
                bar = st.progress(0.0)
                result = attr.integrated_gradients(lm, ids, target, contrast, steps,
                                                   progress=lambda f, m: bar.progress(min(max(f, 0.0), 1.0), text=m))
                status.update(label=f"{result.steps} points on the path in {result.seconds:.1f} s ({result.passes} "
                                    "batched forward + backward passes)", state="complete", expanded=False)
        else:
            with st.spinner(f"{attr.METHOD_NAMES[method].capitalize()} over {len(ids):,} tokens…"):
                result = attr.attribute(lm, ids, method, target, contrast)
    except PlaygroundError as exc:
        st.error(describe(exc))
        return
    ss[K.ATTR_RESULT] = (key, result)


def attribution(lm, ids, view) -> None:
    """The attribution section for the prefix `ids`; `view` (stepping.NextTokenView) gives the bars' tokens."""
    sb = bounds(attr.AttributionSettings, "steps")
    state.init({K.ATTR_ON: False, K.ATTR_METHOD: "gradient_x_input", K.ATTR_STEPS: attr.AttributionSettings().steps},
               URL)
    st.subheader("Why this token?")
    st.toggle("Attribute a next token to the prefix", key=K.ATTR_ON,
              help="How much each token of the text so far pushed the model toward a candidate next token.")
    state.to_url(URL)
    if not ss[K.ATTR_ON]:
        st.caption("Turn it on to see which tokens of the text so far made the model pick its next token, by "
                   "gradients or by attention, and why one token rather than another.")
        return
    if not _weights_here(lm, "Attribution"):
        return
    rows = {r.id: r for r in view.rows}
    ids_shown = list(rows)
    if ss.get(K.ATTR_TARGET) not in rows:
        ss[K.ATTR_TARGET] = ids_shown[0]  # the top token
    if ss.get(K.ATTR_CONTRAST) not in rows and ss.get(K.ATTR_CONTRAST) != NO_CONTRAST:
        ss[K.ATTR_CONTRAST] = NO_CONTRAST
    label = lambda i: f"#{rows[i].rank}  {visible(rows[i].text)}  ({pct(rows[i].p_model)})"  # noqa: E731
    c1, c2, c3 = st.columns([3, 3, 3])
    c1.radio("Method", attr.METHODS, key=K.ATTR_METHOD, format_func=lambda m: attr.METHOD_NAMES[m])
    c2.selectbox("Next token to explain", ids_shown, key=K.ATTR_TARGET, format_func=state.labels(ids_shown, label),
                 help="Any of the bars above; the top token to begin with.")
    c3.selectbox("Rather than", [NO_CONTRAST, *ids_shown], key=K.ATTR_CONTRAST,
                 format_func=state.labels([NO_CONTRAST, *ids_shown], lambda i: "— (no contrast)" if i == NO_CONTRAST else label(i)),
                 help="Pick a second token of the bars: the scores then explain log p(first) − log p(second).")
    method, target = ss[K.ATTR_METHOD], int(ss[K.ATTR_TARGET])
    contrast = None if int(ss[K.ATTR_CONTRAST]) == NO_CONTRAST else int(ss[K.ATTR_CONTRAST])
    if contrast == target:
        st.warning("The contrast is the token itself: pick another one, or none.")
        contrast = None
    if method == "attention_rollout" and contrast is not None:
        st.caption("Rollout has no contrastive form (it does not depend on the token): the contrast is left out.")
        contrast = None
    st.markdown(draw.explain(method, attr.pad_token_text(lm)))
    steps = int(ss[K.ATTR_STEPS])
    key = _attr_key(lm, ids, method, target, contrast, steps)
    if method == "integrated_gradients":
        s1, s2 = st.columns([4, 1], vertical_alignment="bottom")
        s1.slider("Steps (points on the path)", int(sb.lo), int(sb.hi), step=int(sb.step or 1), key=K.ATTR_STEPS,
                  help=f"{sb.help}. Integrated gradients allows {attr.MAX_TOKEN_STEPS.text} (tokens × steps).")
        steps = int(ss[K.ATTR_STEPS])
        key = _attr_key(lm, ids, method, target, contrast, steps)
        if s2.button("Run", key=K.ATTR_RUN, type="primary"):
            _run_attr(lm, ids, method, target, contrast, steps, key)
    held = ss.get(K.ATTR_RESULT)
    if (held is None or held[0] != key) and method != "integrated_gradients":
        _run_attr(lm, ids, method, target, contrast, steps, key)
        held = ss.get(K.ATTR_RESULT)
    if held is None or held[0] != key:
        st.caption(f"Press *Run* for integrated gradients over these {len(ids):,} tokens at {steps} steps "
                   f"({len(ids) * steps:,} token-steps of the {attr.MAX_TOKEN_STEPS.value:,} allowed).")
        return
    show(held[1])


def show(result: attr.Attribution) -> None:
    """One attribution: what f is, the shaded text, the completeness check, the table."""
    if result.method == "attention_rollout":
        st.caption(f"The last position's row of the rollout over {result.num_tokens:,} tokens "
                   f"(the same for every next token); it adds up to {result.total:.3f}.")
    else:
        st.caption(f"f = {result.objective} = {result.f_input:.3f} nats at your text. Scores in nats of f.")
    st.markdown(draw.shaded_html(result), unsafe_allow_html=True)
    st.markdown(draw.legend_html(result), unsafe_allow_html=True)
    line = draw.completeness(result)
    if line:
        st.markdown(line)
        with st.expander("The path from the baseline to your text"):
            st.plotly_chart(draw.path_figure(result), key="next_token_attr_path", config={"displayModeBar": False})
            st.caption("Each marker is a point where the gradient was taken: a quarter evenly spaced, the rest "
                       "where f changes faster than its slope there says (steep places need more points).")
    st.dataframe(draw.table(result), hide_index=True, key="next_token_attr_table")
