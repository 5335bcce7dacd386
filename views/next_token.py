"""Next token: the probability of every next token, and how temperature, top-k, top-p and
min-p reshape it, step by step, for one model or two side by side.

One forward pass per (model, prefix ids), kept in a per-session `LogitsCache`; every slider
re-renders from those logits without running the model. The page only reads widgets, calls
playground.stepping / playground.sampling, and draws with components.distribution.
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from components import constrain as constrain_ui
from components import distribution as figs
from components import held, models, next_token_inside, pickers, special_tokens, state
from components.pickers import NONE
from playground import links
from playground.links import Link
from playground import stepping as stp
from playground.errors import InputError, PlaygroundError, describe
from playground.options import bounds
from playground.registry import DEFAULT_CHAT_MODEL, get_model
from playground.sampling import SamplingSettings, check

DEFAULT_PROMPT = "Once upon a time, in a small village by the sea, there lived a"
DEFAULT_TEMPS = "0.2, 0.7, 1.0, 1.5"
MAX_REPLAY = 256  # steps a link may carry


class K:
    PROMPT = "next_token_prompt"
    CHAT = "next_token_chat"
    MODEL = "next_token_model"
    MODEL2 = "next_token_model2"
    TEMPERATURE = "next_token_temperature"
    TOP_K = "next_token_top_k"
    TOP_P = "next_token_top_p"
    MIN_P = "next_token_min_p"
    SEED = "next_token_seed"
    TOP_N = "next_token_top_n"
    TEMPS = "next_token_temps"
    WALK = "next_token_walk"  # the walk as text ('123g.456s'), kept in the URL
    N_SAMPLES = "next_token_n_samples"
    N_TOKENS = "next_token_n_tokens"
    PICK = "next_token_pick"
    STEP_SAMPLE = "next_token_step_sample"
    STEP_GREEDY = "next_token_step_greedy"
    STEP_PICK = "next_token_step_pick"
    UNDO = "next_token_undo"
    RESET = "next_token_reset"
    RUN_SWEEP = "next_token_run_sweep"
    PLAIN = "next_token_plain"  # special tokens typed in the prompt go as plain text
    # not widgets
    CACHE = "next_token_cache"
    WALK_OBJ = "next_token_walk_obj"
    ACTION = "next_token_action"
    SWEEP = "next_token_sweep"
    SIDEBAR_SEEN = "next_token_sidebar_seen"
    SERVER_MODEL = "next_token_server_model"  # a model on an endpoint: the top tokens it returns
    SERVER_RUN = "next_token_server_run"
    SERVER_RESULT = "next_token_server_result"


SAMPLING_KEYS = {K.TEMPERATURE: "temperature", K.TOP_K: "top_k", K.TOP_P: "top_p", K.MIN_P: "min_p", K.SEED: "seed"}
URL = {K.PROMPT: Link("prompt", links.Text()), K.CHAT: Link("chat", links.Flag()),
       K.MODEL: Link("model_a", links.Model("generate", engine="full_distribution")),
       K.MODEL2: Link("model_b", links.Model("generate", empty_ok=True, engine="full_distribution")),
       K.TOP_N: Link("top_n", links.Number.of(stp.DisplaySettings, "top_n")), K.TEMPS: Link("temps", links.Text(200)),
       K.WALK: Link("walk", links.Text()),
       K.N_SAMPLES: Link("n_samples", links.Number.of(stp.SweepSettings, "n_samples")),
       K.N_TOKENS: Link("n_tokens", links.Number.of(stp.SweepSettings, "n_tokens")),
       **{key: Link(name, links.Number.of(SamplingSettings, name)) for key, name in SAMPLING_KEYS.items()}}

ss = st.session_state
base = SamplingSettings()
display_bounds = bounds(stp.DisplaySettings, "top_n")


# --- state ------------------------------------------------------------------------------------

side_model = state.current_model()
first_model = side_model if side_model in pickers.for_need("full_distribution") else DEFAULT_CHAT_MODEL
defaults = {
    K.PROMPT: DEFAULT_PROMPT, K.CHAT: False, K.MODEL: first_model, K.MODEL2: NONE,
    K.TEMPERATURE: base.temperature, K.TOP_K: base.top_k, K.TOP_P: base.top_p, K.MIN_P: base.min_p, K.SEED: base.seed,
    K.TOP_N: stp.DisplaySettings().top_n, K.TEMPS: DEFAULT_TEMPS, K.WALK: "",
    K.N_SAMPLES: stp.SweepSettings().n_samples, K.N_TOKENS: stp.SweepSettings().n_tokens,
}
state.init(defaults, URL)
if ss.get(K.SIDEBAR_SEEN) != side_model:  # follow the sidebar when it changes to a causal LM
    if K.SIDEBAR_SEEN in ss and pickers.can_generate(side_model):
        ss[K.MODEL] = side_model
    ss[K.SIDEBAR_SEEN] = side_model
cache: stp.LogitsCache = held.logits_cache(K.CACHE, lambda admit: stp.LogitsCache(max_entries=48, admit=admit))

options = pickers.for_need("full_distribution")
for key in (K.MODEL, K.MODEL2):
    value = ss[key]
    if value and value not in options:
        if pickers.can_generate(value) and get_model(value).capabilities.distribution:
            options.append(value)
        else:  # a bad id in the URL, or an encoder
            ss[key] = first_model if key == K.MODEL else NONE


# --- the page ---------------------------------------------------------------------------------

st.title("Next token")
st.write(
    "A language model ends every step with a score for each token of its vocabulary; softmax turns those "
    "scores into probabilities. Here is that distribution for the token after your prompt, and what "
    "temperature, top-k, top-p and min-p do to it before a token is drawn. Walk the text one token at a time, "
    "compare temperatures, and sample many continuations at once."
)

with st.expander("How to read this"):
    st.markdown(
        "- **The bars** are the most likely next tokens, most likely on top (`␣` is a space, `↵` a new line, "
        "`#3` the token's rank). **Purple** bars survive the filters and show their probability *renormalised*: "
        "the chance that a draw picks them. **Grey** bars are dropped by the filters. The **black tick** is each "
        "token's probability after temperature, before the filters: the gap to a purple bar is the "
        "renormalisation.\n"
        "- **The order** is the one Hugging Face `transformers` uses in `generate`: divide the scores by the "
        "temperature, then keep the top-k, then the top-p (the smallest set of tokens whose probability adds up "
        "to p; tokens tied with the last one are kept), then min-p (drop tokens below min-p × the top token's "
        "probability), then softmax and draw. **Temperature 0** is greedy: always the most likely token.\n"
        "- **The numbers**: *entropy* in bits of the distribution a token is drawn from (0: one certain token; "
        "each extra bit doubles the number of equally likely choices); the *top token*'s probability; how many "
        "tokens are *kept* out of the whole vocabulary; and the *mass kept*: how much probability the survivors "
        "held before they were renormalised.\n"
        "- **Step through** takes one token: *Sample* draws one under the settings (the seed and the step "
        "number fix the draw), *Greedy* takes the most likely, *Take this token* takes the one you pick. Each "
        "chosen token is coloured by the probability the model gave it (red: unlikely, green: likely); the small "
        "number after it is its rank. Undo and Reset go back; the model is run once per new token.\n"
        "- **Temperatures side by side**: the same scores at several temperatures: low sharpens, high flattens.\n"
        "- **Sampling sweep**: several continuations at each temperature. *Mean log-probability* (in nats per "
        "token, under the model's own distribution) says how likely the model finds its text: near 0 is "
        "predictable, very negative is odd. *Distinct-n* is the share of different n-grams across the samples: "
        "1 means no repeats, low means the samples say the same thing.\n"
        "- **Try**: temperature 0, then 2; top-p 0.5; min-p 0.1; take a token of rank 10 and see the story turn; "
        "add Gemma as a second model: it reads the same text with its own tokenizer."
    )

st.text_area("Prompt", key=K.PROMPT, height=80, help="The text the model continues.")
c1, c2, c3 = st.columns([3, 3, 2])
c1.selectbox("Model", options, key=K.MODEL, format_func=pickers.label, help="Starts as the model picked in the sidebar.")
if pickers.left_out("full_distribution"):
    st.caption(pickers.left_out("full_distribution"))
c2.selectbox("Second model, side by side", [NONE, *options], key=K.MODEL2, format_func=pickers.label,
             help="Reads the same text (prompt and the tokens walked so far) with its own tokenizer.")
c3.toggle("Chat template", key=K.CHAT,
          help="Wrap the prompt in the model's chat template (as a user message, ready for the answer).")

lm = models.require(ss[K.MODEL], kind="causal")
tok = lm.tokenizer
lm2 = models.require(ss[K.MODEL2], kind="causal") if ss[K.MODEL2] else None
for m in (lm, lm2):
    if m is not None and ss[K.CHAT] and not stp.has_chat_template(m.tokenizer):
        st.caption(f"{m.spec.label} has no chat template (a base model): it reads the prompt raw.")

if ss[K.TOP_K] > len(tok):  # e.g. top-k from a link larger than this vocabulary
    st.warning(f"Top-k was {ss[K.TOP_K]:,}; {lm.spec.label} has only {len(tok):,} tokens, so {len(tok):,} is used.")
    ss[K.TOP_K] = len(tok)

tb, kb, pb, mb, sb = (bounds(SamplingSettings, n) for n in ("temperature", "top_k", "top_p", "min_p", "seed"))
s1, s2, s3, s4, s5, s6 = st.columns([3, 2, 3, 3, 2, 2])
s1.slider("Temperature", tb.lo, tb.hi, step=tb.step, key=K.TEMPERATURE, help=tb.help)
s2.number_input("Top-k", int(kb.lo), int(min(kb.hi, len(tok))), step=int(kb.step or 1), key=K.TOP_K, help=kb.help)
s3.slider("Top-p", pb.lo, pb.hi, step=pb.step, key=K.TOP_P, help=pb.help)
s4.slider("Min-p", mb.lo, mb.hi, step=mb.step, key=K.MIN_P, help=mb.help)
s5.number_input("Seed", int(sb.lo), int(sb.hi), step=1, key=K.SEED, help=sb.help)
s6.slider("Tokens shown", int(display_bounds.lo), int(display_bounds.hi), step=int(display_bounds.step or 1),
          key=K.TOP_N, help=display_bounds.help)

plain = special_tokens.check(ss[K.PROMPT], {m.spec.label: m.tokenizer for m in (lm, lm2) if m is not None}, K.PLAIN)
try:
    settings = check(SamplingSettings(**{name: ss[key] for key, name in SAMPLING_KEYS.items()}), len(tok))
    prompt = stp.make_prompt(tok, ss[K.PROMPT], ss[K.CHAT], plain=plain)
except PlaygroundError as exc:
    st.error(describe(exc))
    st.stop()
top_n = int(ss[K.TOP_N])


def _dist(m, ids):
    """The cached distribution after `ids`, running the model (once) when it is new."""
    if (m.spec.id, tuple(ids)) in cache:
        return cache.get(m, ids)
    with st.spinner(f"Running {m.spec.label} on {len(ids):,} tokens…"):
        return cache.get(m, ids)


# --- the walk ---------------------------------------------------------------------------------

walk = ss.get(K.WALK_OBJ)
if not isinstance(walk, stp.Walk) or walk.model_id != lm.spec.id or walk.prompt_ids != prompt.ids:
    fresh = stp.Walk(lm.spec.id, prompt.ids)
    if isinstance(walk, stp.Walk) or not ss[K.WALK]:
        walk = fresh  # the prompt or the model changed: start again
    else:  # the first run from a link that carries a walk
        try:
            choices = stp.parse_walk(ss[K.WALK])
            if len(choices) > MAX_REPLAY:
                raise InputError(f"The link's walk has {len(choices)} steps; at most {MAX_REPLAY} are replayed.")
            with st.spinner(f"Replaying the {len(choices)} steps in the link…"):
                walk = stp.replay(lm.spec.id, prompt.ids, choices, lambda ids: cache.get(lm, ids), tok, settings)
        except PlaygroundError as exc:
            st.warning(f"The walk in the link was not replayed: {describe(exc)}")
            walk = fresh

constraint = constrain_ui.next_token_section(lm, prompt.ids, walk)  # None: the walk is free
constrain_ui.tool_call_section(lm)
action = ss.pop(K.ACTION, None)
eos = stp.eos_ids(lm)
if action is not None:
    how, token_id = action
    try:
        if how == "undo":
            walk = walk.undo()
        elif how == "reset":
            walk = walk.reset()
        else:
            walk = (constraint.take if constraint else stp.take)(walk, _dist(lm, walk.ids), tok, how, settings, token_id)
    except PlaygroundError as exc:
        st.error(describe(exc))
try:
    dist = _dist(lm, walk.ids)
except PlaygroundError as exc:
    st.error(describe(exc))
    st.stop()
ss[K.WALK_OBJ] = walk
ss[K.WALK] = walk.to_param()
view = (constraint.view if constraint else stp.view)(dist, settings, tok, top_n)

st.subheader("Step through")
st.markdown(figs.walk_html(prompt.formatted, walk, lambda i: state.link_to(URL, {K.WALK: replace(walk, steps=walk.steps[:i]).to_param()})),
            unsafe_allow_html=True)
if walk.steps:
    st.markdown(figs.walk_legend(), unsafe_allow_html=True)
ended = bool(walk.steps) and walk.steps[-1].token_id in eos
full = len(walk.ids) >= lm.context_length
b1, b2, b3, b4, b5, b6 = st.columns([2, 2, 4, 2, 1.5, 1.5], vertical_alignment="bottom")
b1.button("Sample next", key=K.STEP_SAMPLE, on_click=state.record_action, args=(K.ACTION, "sampled"), disabled=ended or full,
          help="Draw one token under the settings above (seeded: the same seed and step draw the same token).",
          type="primary")
b2.button("Greedy", key=K.STEP_GREEDY, on_click=state.record_action, args=(K.ACTION, "greedy"), disabled=ended or full,
          help="Take the most likely token.")
pick_ids = [r.id for r in view.rows]
if ss.get(K.PICK) not in pick_ids:
    ss[K.PICK] = pick_ids[1] if len(pick_ids) > 1 else pick_ids[0]
rows_by_id = {r.id: r for r in view.rows}
b3.selectbox("Or pick any of the top tokens", pick_ids, key=K.PICK,
             format_func=state.labels(pick_ids, lambda i: f"#{rows_by_id[i].rank}  {figs.visible(rows_by_id[i].text)}  "
                                                    f"({figs.pct(rows_by_id[i].p_model)})"))
b4.button("Take this token", key=K.STEP_PICK, on_click=state.record_action, args=(K.ACTION, "picked", K.PICK), disabled=ended or full)
b5.button("Undo", key=K.UNDO, on_click=state.record_action, args=(K.ACTION, "undo"), disabled=not walk.steps)
b6.button("Reset", key=K.RESET, on_click=state.record_action, args=(K.ACTION, "reset"), disabled=not walk.steps)
if ended:
    st.caption(f"The model ended its text ({figs.visible(walk.steps[-1].text)}). Undo to go on from an earlier token.")
if walk.steps:
    last = walk.steps[-1]
    st.caption(
        f"{len(walk.steps)} token{'s' if len(walk.steps) != 1 else ''} walked · last: "
        f"{figs.visible(last.text)} ({last.how}), model probability {figs.pct(last.p_model)}, rank {last.rank}"
    )
    with st.expander("Every step"):
        st.plotly_chart(figs.walk_steps(walk), key="next_token_walk_chart")
        st.dataframe(
            [{"step": i, "token": figs.visible(s.text), "id": s.token_id, "how": s.how, "rank": s.rank,
              "model probability": round(s.p_model, 4), "probability under the settings": round(s.p_drawn, 4)}
             for i, s in enumerate(walk.steps, start=1)],
            hide_index=True, key="next_token_steps_table",
        )


def _metrics(v: stp.NextTokenView, where) -> None:
    m1, m2, m3, m4 = where.columns(4)
    m1.metric("Entropy", f"{v.entropy_bits:.2f} bits", help=f"The model's own distribution (T = 1, no filter): "
              f"{v.model_entropy_bits:.2f} bits.")
    m2.metric("Top token", figs.pct(v.top_probability), help="The probability of the most likely token, after the filters.")
    m3.metric("Tokens kept", f"{v.n_kept:,}", help=f"Out of {v.vocab_size:,} in the vocabulary.")
    m4.metric("Mass kept", figs.pct(v.kept_mass), help="How much probability the kept tokens held after temperature, "
              "before renormalising.")


def _show(v: stp.NextTokenView, m, n_tokens: int, where, slot: str) -> None:
    where.markdown(f"**{m.spec.label}** · next token after {n_tokens:,} tokens · vocabulary {v.vocab_size:,}")
    _metrics(v, where)
    where.plotly_chart(figs.top_tokens(v), key=f"next_token_bars_{slot}")
    constrain_ui.mass_caption(v, where)


st.subheader("The next token")
if lm2 is None:
    _show(view, lm, len(walk.ids), st, "a")
else:
    left, right = st.columns(2)
    _show(view, lm, len(walk.ids), left, "a")
    try:
        cont = tok.decode(list(walk.token_ids), skip_special_tokens=True)
        prompt2 = stp.make_prompt(lm2.tokenizer, ss[K.PROMPT], ss[K.CHAT], continuation=cont, plain=plain)
        dist2 = _dist(lm2, prompt2.ids)
        settings2 = replace(settings, top_k=min(settings.top_k, dist2.vocab_size))  # a smaller vocabulary keeps all
        view2 = stp.view(dist2, settings2, lm2.tokenizer, top_n)
        _show(view2, lm2, len(prompt2.ids), right, "b")
        right.caption("The same text through its own tokenizer: the prompt and the tokens walked so far.")
    except PlaygroundError as exc:
        right.error(describe(exc))

next_token_inside.lens(lm, walk.ids)
next_token_inside.attribution(lm, walk.ids, view)

# --- temperatures side by side ---------------------------------------------------------------

st.subheader("Temperatures side by side")
st.text_input("Temperatures", key=K.TEMPS, help="Up to six, separated by commas; 0 is greedy. The other filters "
              "(top-k, top-p, min-p) stay as set above.")
temps: tuple[float, ...] = ()
try:
    temps = stp.parse_temperatures(ss[K.TEMPS])
except PlaygroundError as exc:
    st.error(describe(exc))
if temps:
    views_t = [(t, stp.view(dist, replace(settings, temperature=t), tok, min(top_n, 12)))
               for t in temps]
    st.plotly_chart(figs.temperatures(views_t), key="next_token_temps_chart")
    st.caption(" · ".join(f"T = {t:g}: top token {figs.pct(v.top_probability)}, entropy {v.entropy_bits:.2f} bits"
                          for t, v in views_t))

# --- a model server's top tokens ------------------------------------------------------------

st.subheader("On a model server")
servers = [m for m in pickers.for_need("distribution") if not get_model(m).capabilities.distribution]
if not servers:
    st.caption("Add a model server in the sidebar (*A model server*) and list its models to see, for the same text, "
               "the top next tokens it returns. A server sends only its top few, never the whole distribution.")
else:
    if ss.get(K.SERVER_MODEL) not in servers:
        ss[K.SERVER_MODEL] = servers[0]
    v1, v2 = st.columns([4, 1], vertical_alignment="bottom")
    v1.selectbox("Model on a server", servers, key=K.SERVER_MODEL, format_func=pickers.label)
    server_text = ss[K.PROMPT] + tok.decode(list(walk.token_ids), skip_special_tokens=False)
    server_key = (ss[K.SERVER_MODEL], server_text, ss[K.CHAT], top_n)
    if v2.button("Ask the server", key=K.SERVER_RUN, type="primary"):
        remote_lm = models.require(ss[K.SERVER_MODEL])
        try:
            with st.spinner(f"Asking {remote_lm.spec.label} for its top {top_n} next tokens…"):
                ss[K.SERVER_RESULT] = (server_key, remote_lm.top_distribution(server_text, top_n,
                                                                               use_chat_template=ss[K.CHAT]))
        except PlaygroundError as exc:
            st.error(describe(exc))
    held_server = ss.get(K.SERVER_RESULT)
    if held_server and held_server[0] == server_key:
        st.plotly_chart(figs.server_top(held_server[1]), key="next_token_server_chart")
        st.caption(held_server[1].note)
    else:
        st.caption("Same text as above (prompt and the tokens walked). Press *Ask the server* for its top tokens.")

# --- the sampling sweep ----------------------------------------------------------------------

st.subheader("Sampling sweep")
st.write("Several continuations of the text so far at each temperature above, with the filters as set.")
if lm.engine != "transformers":
    st.info(f"The sweep samples every continuation in one batch, which needs the model's weights in PyTorch: "
            f"{lm.spec.label} runs on {lm.engine}. Pick the transformers entry of this model "
            f"({pickers.label(lm.spec.base_id)}) above to run it.", icon=":material/info:")
    state.to_url(URL)
    st.stop()
nb, tb2 = bounds(stp.SweepSettings, "n_samples"), bounds(stp.SweepSettings, "n_tokens")
w1, w2, w3 = st.columns([3, 3, 2], vertical_alignment="bottom")
w1.slider("Samples per temperature", int(nb.lo), int(nb.hi), step=int(nb.step or 1), key=K.N_SAMPLES, help=nb.help)
w2.slider("Tokens per sample", int(tb2.lo), int(tb2.hi), step=int(tb2.step or 1), key=K.N_TOKENS, help=tb2.help)
sweep_settings = stp.SweepSettings(n_samples=int(ss[K.N_SAMPLES]), n_tokens=int(ss[K.N_TOKENS]))
sweep_key = (lm.spec.id, walk.ids, settings, temps, sweep_settings)
if w3.button("Run the sweep", key=K.RUN_SWEEP, disabled=not temps, type="primary"):
    with st.status(f"Sampling {sweep_settings.n_samples * len(temps)} continuations…", expanded=True) as status:
        bar = st.progress(0.0)
        try:
            result = stp.sweep(lm, walk.ids, settings, temps, sweep_settings,
                               progress=lambda f, msg: bar.progress(min(f, 1.0), text=msg))
            ss[K.SWEEP] = (sweep_key, result)
            status.update(label=f"{len(temps) * sweep_settings.n_samples} samples in {result.seconds:.1f} s "
                                f"({result.forward_passes} batched model calls)", state="complete", expanded=False)
        except PlaygroundError as exc:
            status.update(label="The sweep failed", state="error")
            st.error(describe(exc))
held = ss.get(K.SWEEP)
if held and held[0] == sweep_key:
    sw = held[1]
    st.plotly_chart(figs.sweep_chart(sw), key="next_token_sweep_chart")
    st.dataframe(
        [{"temperature": p.temperature, "mean log-probability": round(p.mean_logprob, 3),
          "distinct-1": round(p.distinct_1, 3), "distinct-2": round(p.distinct_2, 3),
          "tokens": sum(len(s.token_ids) for s in p.samples)} for p in sw.points],
        hide_index=True, key="next_token_sweep_table",
    )
    with st.expander("The samples"):
        for p in sw.points:
            st.markdown(f"**T = {p.temperature:g}**")
            for s in p.samples:
                st.text(f"{s.text!s}" + ("  [end]" if s.ended else "") + f"   (mean log-prob {s.mean_logprob:.2f})")
elif held:
    st.caption("The last sweep was for another text or other settings: run it again to see these.")
else:
    st.caption("Run the sweep to draw the samples (one batched model call per token).")

state.to_url(URL)
