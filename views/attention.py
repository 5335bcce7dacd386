"""Attention: which tokens each token looks at, layer by layer and head by head.

One forward pass per (model, text), kept in the server's memory budget under this session
(components/held.py); every picker re-renders from it.
Two models can sit side by side on the same text. The page only reads widgets, calls
playground.attention, and draws with components.attention.
"""

from __future__ import annotations

import streamlit as st

from components import attention as figs
from components import held, models, pickers, state
from components.pickers import NONE
from components.format import human_bytes
from playground import attention as attn
from playground import links
from playground.links import Link
from playground.errors import PlaygroundError, describe
from playground.options import bounds
from playground.registry import DEFAULT_CHAT_MODEL, get_model

MEAN = -1  # the head picker's "mean over heads"
AUTO = -2  # layer / head / token not picked yet: open where the token "it" links most


class K:
    TEXT = "attention_text"
    MODEL = "attention_model"
    MODEL2 = "attention_model2"
    SIZE = "attention_size"
    SCALE = "attention_scale"
    SIDEBAR_SEEN = "attention_sidebar_seen"

    @staticmethod
    def slot(name: str, slot: str) -> str:
        return f"attention_{name}_{slot}"


SLOTS = ("a", "b")
SUFFIX = {"a": "", "b": "_b"}
PER_SLOT = ("layer", "head", "token", "start")
SCALES = ("sqrt", "linear")
PICK = links.Number(AUTO, 100_000, integer=True)  # a layer, head, token or start: this model's ranges are checked below
URL = {K.TEXT: Link("text", links.Text()), K.MODEL: Link("model_a", links.Model(engine="attention")),
       K.MODEL2: Link("model_b", links.Model(empty_ok=True, engine="attention")),
       K.SIZE: Link("size", links.Number.of(attn.AttentionSettings, "window_size")),
       K.SCALE: Link("scale", links.Choice(SCALES))}
URL.update({K.slot(n, s): Link(f"{n}{SUFFIX[s]}", PICK) for s in SLOTS for n in PER_SLOT})

size_bounds = bounds(attn.AttentionSettings, "window_size")
cells = attn.AttentionSettings().thumb_cells


# --- state --------------------------------------------------------------------------------------

side_model = state.current_model()
defaults = {K.TEXT: attn.DEFAULT_TEXT, K.MODEL: side_model, K.MODEL2: NONE, K.SIZE: int(attn.AttentionSettings().window_size),
            K.SCALE: "sqrt"}
defaults.update({K.slot(n, s): AUTO for s in SLOTS for n in ("layer", "head", "token")})
defaults.update({K.slot("start", s): 0 for s in SLOTS})
state.init(defaults, URL)
if st.session_state.get(K.SIDEBAR_SEEN) != side_model:  # follow the sidebar when it changes
    if K.SIDEBAR_SEEN in st.session_state:
        st.session_state[K.MODEL] = side_model
    st.session_state[K.SIDEBAR_SEEN] = side_model

options = pickers.for_need("attention")
for key in (K.MODEL, K.MODEL2):
    value = st.session_state[key]
    if value and value not in options:
        try:
            if not get_model(value).capabilities.attention:  # llama.cpp or remote: no attention to show
                raise PlaygroundError(value)
            options.append(value)
        except PlaygroundError:  # a bad id in the URL, or an entry whose engine shows no attention
            st.session_state[key] = (side_model if side_model in options else DEFAULT_CHAT_MODEL) if key == K.MODEL else NONE


# --- the page -----------------------------------------------------------------------------------

st.title("Attention")
st.write(
    "Inside every layer of a transformer, each head decides how much each token draws on the other tokens. "
    "Here is every one of those weightings for your text: all layers and heads at a glance, one head large, "
    "one token across the layers, and what they add up to."
)

with st.expander("How to read this"):
    st.markdown(
        "- **A map** is a square: row *i* is a token asking, column *j* a token it draws on; the colour is the "
        "weight, and every row sums to 1. Colours follow a square-root ramp so that small weights show next to "
        "large ones; the colour bar and every hover read in real weights.\n"
        "- **Decoders** (SmolLM2, Gemma 3) are *causal*: a token sees only itself and earlier tokens, so the "
        "upper triangle is empty. **Encoders** (MiniLM) are *bidirectional*: every token sees the whole text.\n"
        "- **Maps**, top: every map in one grid (layers and heads on the axes), shrunk for long texts (each cell "
        "sums a block of columns and averages a block of rows, so rows still sum to 1). Click one, or use the "
        "Layer and Head pickers, to open it below.\n"
        "- **Maps**, below: the picked head large, over a window of the text, with token labels. The *earlier* "
        "column is what each row puts on the tokens before the window; move the window with its slider. "
        "*Mean over heads* averages the layer's heads.\n"
        "- **One token**: pick a token and see what it draws on in every layer, and as shaded text.\n"
        "- **Summaries**: how much each layer puts on the first token (the *attention sink*: heads with nothing "
        "to do park their weight there), how spread out each head is (entropy in bits: 0 is one token, "
        "higher is spread out), and each layer's mean over heads.\n"
        "- **Try**: the page opens on the head where *it* draws most on another word. Look for a diagonal "
        "just below the main one (a previous-token head), a bright first column (the sink), and compare "
        "a decoder with the encoder on the same sentence."
    )

st.text_area("Text", key=K.TEXT, height=90, help="Every model reads this text; the maps are recomputed when it changes.")
c1, c2, c3, c4 = st.columns([3, 3, 2, 2])
c1.selectbox("Model", options, key=K.MODEL, format_func=lambda m: pickers.label(m, role=True), help="Starts as the model picked in the sidebar.")
c2.selectbox("Second model, side by side", [NONE, *options], key=K.MODEL2, format_func=lambda m: pickers.label(m, role=True))
if pickers.left_out("attention"):
    st.caption(pickers.left_out("attention"))
c3.slider("Window (tokens)", int(size_bounds.lo), int(size_bounds.hi), step=int(size_bounds.step or 1), key=K.SIZE,
          help=size_bounds.help)
c4.radio("Colour", ["sqrt", "linear"], key=K.SCALE, horizontal=True,
         format_func=lambda s: {"sqrt": "square root", "linear": "linear"}[s])


def _pick_from_overview(slot: str) -> None:
    """A click on a thumbnail opens that (layer, head)."""
    event = st.session_state.get(K.slot("overview", slot))  # Streamlit's PlotlySelectionState
    points = event["selection"]["points"] if event else []
    for p in points:
        data = p.get("customdata")
        if data is not None and len(data) == 2:
            st.session_state[K.slot("layer", slot)] = int(data[0])
            st.session_state[K.slot("head", slot)] = int(data[1])
            return


def _analysis(slot: str, model_id: str, text: str) -> attn.Analysis | None:
    """The kept analysis of (model, text), running the model once if it is new or was dropped from the
    server's memory budget (components/held.py) to make room for another session."""
    lm = models.require(model_id, kind="any")
    kept = held.get(K.slot("result", slot))  # an attn.Analysis, or None
    if kept is not None and kept.key == (lm.spec.id, text):
        return kept
    held.drop(K.slot("result", slot))  # free the old maps before making new ones
    last_key = st.session_state.get(K.slot("result_key", slot))  # what the picks were made for
    try:
        need = attn.kept_bytes(lm, text, cells)
        with held.reserve(K.slot("result", slot), need, "these attention maps", lm) as room, \
                st.spinner(f"Running {lm.spec.name} over the text and keeping every attention map…"):
            analysis = attn.analyse(lm, text, cells)
            room.fill(analysis, held.size_of(analysis))
    except PlaygroundError as exc:
        st.error(describe(exc))
        return None
    except Exception as exc:  # noqa: BLE001 - shown, never a traceback
        st.error(describe(exc))
        return None
    st.session_state[K.slot("result_key", slot)] = analysis.key
    if last_key is not None and last_key != analysis.key:  # a new model or text: re-open on the most telling head
        for name in ("layer", "head", "token"):
            st.session_state[K.slot(name, slot)] = AUTO
        st.session_state[K.slot("start", slot)] = 0
    return analysis


def _settle(slot: str, a: attn.Analysis) -> list[str]:
    """Fill AUTO picks and clamp every pick into this model's ranges (before the widgets exist).

    Returns what had to change, in words: a link may ask for a layer, head or token this model does
    not have, and the page says what it shows instead.
    """
    m = a.maps
    ss = st.session_state
    kl, kh, kt, ks = (K.slot(n, slot) for n in ("layer", "head", "token", "start"))
    notes = []
    if ss[kl] != AUTO and not 0 <= int(ss[kl]) < m.num_layers:
        notes.append(f"The link asked for layer {int(ss[kl]):,}; {m.num_layers} layers are numbered 0 to "
                     f"{m.num_layers - 1}, so layer {min(max(int(ss[kl]), 0), m.num_layers - 1)} is shown.")
    if ss[kh] not in (AUTO, MEAN) and not 0 <= int(ss[kh]) < m.num_heads:
        notes.append(f"The link asked for head {int(ss[kh]):,}; this model has heads 0 to {m.num_heads - 1}, "
                     "so the mean over heads is shown.")
    if ss[kt] != AUTO and not 0 <= int(ss[kt]) < m.num_tokens:
        notes.append(f"The link asked for token {int(ss[kt]):,}; the text has {m.num_tokens:,} tokens, "
                     "so the token the page picks itself is shown.")
    size = min(ss[K.SIZE], m.num_tokens)
    if ss[kt] == AUTO or not 0 <= ss[kt] < m.num_tokens:
        found = attn.find_token(m, "it")
        ss[kt] = found if found is not None else m.num_tokens - 1
        if ss[ks] == 0 and ss[kt] >= size:
            ss[ks] = ss[kt] - size + 1
    if ss[kl] == AUTO or ss[kh] == AUTO:
        link = attn.strongest_link(m, ss[kt])
        layer, head = (link.layer, link.head) if link else (m.num_layers // 2, MEAN)
        ss[kl] = layer if ss[kl] == AUTO else ss[kl]
        ss[kh] = head if ss[kh] == AUTO else ss[kh]
    ss[kl] = min(max(int(ss[kl]), 0), m.num_layers - 1)
    if not (ss[kh] == MEAN or 0 <= ss[kh] < m.num_heads):
        ss[kh] = MEAN
    start, stop = attn.clamp_window(m.num_tokens, int(ss[ks]), size)
    ss[ks] = start
    if not start <= ss[kt] < stop:  # keep the picked token inside the window
        ss[kt] = min(max(ss[kt], start), stop - 1)
    return notes


def _show(slot: str, model_id: str, text: str, narrow: bool) -> None:
    spec = get_model(model_id)
    st.subheader(f"{spec.label} · {'decoder' if spec.can_generate else 'encoder'}")
    a = _analysis(slot, model_id, text)
    if a is None:
        return
    for note in _settle(slot, a):
        st.info(note, icon=":material/info:")
    m, summary = a.maps, a.summary
    ss = st.session_state
    kl, kh, kt, ks = (K.slot(n, slot) for n in ("layer", "head", "token", "start"))

    st.markdown("\n".join(f"- {note}" for note in attn.architecture_notes(m)))
    exact = "float32, exact" if m.precision == "float32" else "float16, to about 0.001"
    if m.computed_in not in ("float32", m.precision):
        exact += f"; the model computes them in {m.computed_in}, so rows sum to 1 only to about 0.01"
    st.caption(f"{m.num_tokens:,} tokens · {m.num_layers} layers × {m.num_heads} heads = "
               f"{m.num_layers * m.num_heads:,} maps, shape {tuple(m.shape)} · kept in {exact}: {human_bytes(m.nbytes)}")

    labels = m.labels or m.tokens
    p1, p2 = st.columns(2)
    p1.slider("Layer", 0, m.num_layers - 1, key=kl)
    heads = [MEAN, *range(m.num_heads)]
    grouped = (m.kv_heads or m.num_heads) < m.num_heads
    p2.selectbox("Head", heads, key=kh,
                 format_func=state.labels(heads, lambda h: "mean over heads" if h == MEAN else
                                          (f"head {h} (kv {m.kv_head_of(h)})" if grouped else f"head {h}")))
    size = min(ss[K.SIZE], m.num_tokens)
    if m.num_tokens > size:
        st.slider("Window start (token)", 0, m.num_tokens - size, key=ks,
                  help=f"The large views show tokens start to start + {size}; the overview always shows all {m.num_tokens:,}.")
    start, stop = attn.clamp_window(m.num_tokens, int(ss[ks]), size)
    shown = list(range(start, stop))
    st.selectbox("Token", shown, key=kt, format_func=state.labels(shown, lambda i: f"·{i}  {labels[i]!r}"),
                 help="The token whose attention the One token tab shows (inside the window).")
    layer, head = int(ss[kl]), (None if ss[kh] == MEAN else int(ss[kh]))
    scale = ss[K.SCALE]
    head_name = "mean over heads" if head is None else f"head {head}"

    t_maps, t_token, t_sum = st.tabs(["Maps", "One token", "Summaries"])
    with t_maps:
        block = a.thumbs.block
        st.caption("**Every map** at a glance. "
                   + ("Each thumbnail is the full map." if block == 1 else
                      f"Each cell covers {block} × {block} tokens: the mean over {block} rows of the sum over {block} "
                      "columns, so rows still sum to 1.")
                   + " Click one to open it below.")
        st.plotly_chart(figs.overview_figure(a.thumbs, summary, (layer, head), scale, width_hint=520 if narrow else 1100),
                        key=K.slot("overview", slot), on_select=lambda: _pick_from_overview(slot),
                        selection_mode="points", config={"displayModeBar": False})
        win = attn.window(m, layer, head, start, size)
        st.caption(f"**Layer {layer}, {head_name}**: tokens {start}–{stop - 1} of {m.num_tokens:,}. "
                   "Rows ask, columns answer; hover for both tokens and the weight.")
        st.plotly_chart(figs.head_figure(win, scale), key=K.slot("head_fig", slot), config={"displayModeBar": False})
    with t_token:
        index = int(ss[kt])
        ta = attn.token_attention(m, index, head)
        row = ta.weights[layer]  # (T,)
        st.markdown(f"What **·{index} {labels[index]!r}** draws on in layer {layer} ({head_name}):")
        st.html(figs.token_html(labels[start:stop], row[start:stop], start, index, before=float(row[:start].sum()),
                                after=float(row[stop:].sum()), scale=scale))
        st.caption("Most: " + ", ".join(f"·{j} {labels[j]!r} {w:.0%}" for j, w in attn.top_keys(row, 3)))
        st.markdown(f"The same token in every layer ({head_name}):")
        st.plotly_chart(figs.token_layers_figure(ta, start, stop, labels[start:stop], scale, m.is_causal, layer),
                        key=K.slot("token_fig", slot),
                        config={"displayModeBar": False})
    with t_sum:
        top_layer, top_share = summary.strongest_sink_layer()
        st.markdown(f"**Attention sink:** on average {float(summary.sink.mean()):.0%} of each token's attention goes to "
                    f"the first token {summary.first_token!r}; most in layer {top_layer} ({top_share:.0%}).")
        st.plotly_chart(figs.sink_figure(summary), key=K.slot("sink_fig", slot), config={"displayModeBar": False})
        f_layer, f_head, f_bits = summary.most_focused()
        st.markdown(f"**Entropy per head** (bits; spreading evenly would give about {float(summary.uniform_bits.mean()):.1f}): "
                    f"the most focused head is layer {f_layer}, head {f_head} ({f_bits:.2f} bits"
                    + (": nearly all of every row on one token)." if f_bits < 0.1 else ")."))
        st.plotly_chart(figs.entropy_figure(summary), key=K.slot("entropy_fig", slot), config={"displayModeBar": False})
        st.markdown("**Mean over heads, per layer:**")
        st.plotly_chart(figs.layer_means_figure(a.thumbs, scale, per_row=3 if narrow else 6), key=K.slot("means_fig", slot),
                        config={"displayModeBar": False})


text = st.session_state[K.TEXT]
chosen = [("a", st.session_state[K.MODEL])]
if st.session_state[K.MODEL2]:
    chosen.append(("b", st.session_state[K.MODEL2]))
else:
    held.drop(K.slot("result", "b"))
if not text.strip():
    st.info("Type a text above to see what each token attends to.")
else:
    columns = st.columns(len(chosen)) if len(chosen) > 1 else [st.container()]
    for (slot, model_id), column in zip(chosen, columns):
        with column:
            _show(slot, model_id, text, narrow=len(chosen) > 1)

url = dict(URL)  # a text too long for a link stays out of it (state.to_url says so)
dropped = []
if not st.session_state[K.MODEL2]:
    dropped += [K.MODEL2, *(K.slot(n, "b") for n in PER_SLOT)]
for key in dropped:
    st.query_params.pop(url.pop(key).param, None)
state.to_url(url)
