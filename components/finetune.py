"""The Fine-tune page's sections and its loss figure.

views/finetune.py calls the sections in order: `start` (state and link), `intro`, `data` (the bundled
pairs or an uploaded CSV / JSONL), `settings` (LoRA's settings, built from `LoraSettings`' bounds),
`launch` (the estimate, the run's name, Start), `runs` (the run picked: live loss curve, stop,
resume; it redraws itself every two seconds while the run trains), `before_after` (base and tuned,
greedy, on the same prompts), `catalogue` (the tuned entry's id and links to the pages that take it)
and `finish` (the link). Figure: `loss_figure`, which carries the real losses in its data.

The work is in playground.finetune: training runs in a child process that outlives the page and the
session, so nothing here holds a run; each rerun reads the run's folder. What it leaves out: the
routing, the sidebar and the error boundary (app.py).
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from components import cache, models, pickers, state
from playground import finetune as core
from playground import links
from playground.errors import PlaygroundError, describe
from playground.links import Link
from playground.options import bounds
from playground.registry import get_model
from playground.uploads import mb
from playground.limits import UPLOAD_BYTES

BUNDLED, UPLOADED = "bundled", "upload"
SOURCES = {BUNDLED: "The bundled pirate pairs", UPLOADED: "My own pairs (CSV or JSONL)"}
NUMBERS = ("rank", "alpha", "learning_rate", "steps", "batch_size", "heldout_fraction", "max_tokens", "eval_every",
           "threads", "seed")


class K:
    BASE = "finetune_base"
    SOURCE = "finetune_source"
    UPLOAD = "finetune_upload"
    TARGETS = "finetune_targets"
    NAME = "finetune_name"
    RUN = "finetune_run"
    PROMPTS = "finetune_prompts"
    START = "finetune_start"
    STOP = "finetune_stop"
    RESUME = "finetune_resume"
    COMPARE = "finetune_compare"
    # not widgets
    EXAMPLES = "finetune_examples"  # the parsed upload: (file name, size, Examples)
    ESTIMATE = "finetune_estimate"
    BEFORE_AFTER = "finetune_before_after"
    NOTE = "finetune_note"  # a message shown once after a rerun


def key(field: str) -> str:
    return f"finetune_{field}"


URL = {K.BASE: Link("base", links.Choice(core.BASES)), K.SOURCE: Link("data", links.Choice(tuple(SOURCES))),
       K.RUN: Link("run", links.Text(40)),
       **{key(n): Link(n, links.Number.of(core.LoraSettings, n)) for n in NUMBERS}}
DEFAULTS = core.LoraSettings()
ss = st.session_state


def start() -> None:
    runs = core.list_runs()
    state.init({K.BASE: core.DEFAULT_BASE, K.SOURCE: BUNDLED, K.RUN: runs[0] if runs else "",
                K.PROMPTS: "\n".join(core.BEFORE_AFTER_PROMPTS),
                **{key(n): getattr(DEFAULTS, n) for n in NUMBERS}}, URL)
    state.keep(K.TARGETS, K.NAME)
    ss.setdefault(K.TARGETS, list(DEFAULTS.target_modules))
    if ss[K.RUN] and ss[K.RUN] not in runs:
        st.warning(f"There is no run named {ss[K.RUN]!r} on this server; showing the newest one instead.")
        ss[K.RUN] = runs[0] if runs else ""


def intro() -> None:
    st.title("Fine-tune")
    st.write(
        "Teach a small model a new habit with LoRA, here on the CPU, in a few minutes: a few dozen prompt/response "
        "pairs, a few dozen optimizer steps, and the model answers differently. The bundled pairs answer every "
        "question as a pirate (*Ahoy, matey! … Arr!*). Watch the loss fall, then compare the base and the tuned "
        "model on the same prompts, and open the tuned model on any other page: it joins the catalogue."
    )
    with st.expander("How to read this"):
        st.markdown(
            "- **LoRA** freezes every weight of the model. Beside each adapted Linear layer W it trains two thin "
            "matrices, B·A (rank *r*), whose product, times alpha / r, is added to W's output. With rank 8 on "
            "`q_proj` and `v_proj` of SmolLM2 that is 460,800 numbers out of 135 million.\n"
            "- **The loss curve**: the training loss is the cross-entropy of the *response* tokens of each step's "
            "batch (the prompt is read, not learnt), so it is noisy from batch to batch; the held-out loss is "
            "measured on pairs the model never trains on. Both falling means the habit generalises; the training "
            "loss falling while the held-out one climbs is overfitting.\n"
            "- **Before / after**: the same prompts, greedy, through the base and through the tuned model.\n"
            "- **Try**: the defaults (60 steps) already make SmolLM2 open with *Ahoy, matey!*. Train 10 steps and "
            "compare; raise the rank or adapt the MLP (`gate_proj`, `up_proj`, `down_proj`) and watch the loss; "
            "then open the tuned model on the Next token page beside its base, at the start of the answer.\n"
            "- **The machine**: one training runs at a time on this server, in its own process, niced, with "
            "one torch thread by default, so other people's pages stay responsive; it keeps running when you "
            "leave the page or close the tab. Stop keeps a checkpoint (the adapter, the optimizer's state and the "
            "step); Resume continues from it with the same batches."
        )


def data() -> core.Examples:
    """The pairs to train on; stops the page (with what to do) when an upload cannot be read."""
    st.subheader("1. The examples")
    st.radio("Train on", tuple(SOURCES), key=K.SOURCE, horizontal=True, format_func=SOURCES.get)
    if ss[K.SOURCE] == BUNDLED:
        ex = core.bundled_examples()
    else:
        up = st.file_uploader(
            "Prompt/response pairs", type=["csv", "tsv", "jsonl", "json", "ndjson"], key=K.UPLOAD,
            help=f"A CSV with columns prompt,response (or instruction/question/input and completion/answer/output), "
                 f'or JSONL with one {{"prompt": ..., "response": ...}} per line; {mb(UPLOAD_BYTES.value)} at most, '
                 f"{core.MAX_EXAMPLES.text}, UTF-8.")
        if up is None:
            held = ss.get(K.EXAMPLES)
            if held is None:
                st.info("Upload a CSV or JSONL file of prompt/response pairs, or train on the bundled pairs.")
                st.stop()
            ex = held[2]
            st.caption(f"Using {held[0]}, uploaded before.")
        else:
            data_bytes = up.getvalue()
            held = ss.get(K.EXAMPLES)
            if held is not None and held[:2] == (up.name, len(data_bytes)):
                ex = held[2]
            else:
                try:
                    ex = core.parse_examples(data_bytes, up.name)
                except PlaygroundError as exc:
                    st.error(describe(exc))
                    st.stop()
                ss[K.EXAMPLES] = (up.name, len(data_bytes), ex)
    for note in ex.notes:
        st.warning(note)
    st.caption(f"{len(ex.rows)} pairs from {ex.source} · sha256 {ex.digest[:12]}…")
    st.dataframe([{"prompt": r.prompt, "response": r.response} for r in ex.rows[:50]], height=180,
                 width="stretch", hide_index=True)
    return ex


def _number(field: str, widget: str = "slider", **kw) -> None:
    b = bounds(core.LoraSettings, field)
    default = getattr(DEFAULTS, field)
    cast = float if isinstance(default, float) else int
    args = dict(min_value=cast(b.lo), max_value=cast(b.hi), step=cast(b.step or 1), key=key(field), help=b.help)
    label = field.replace("_", " ").capitalize()
    if widget == "slider" and b.hi > b.lo:
        st.slider(label, **args, **kw)
    else:
        st.number_input(label, **args, **kw)


def settings() -> tuple[str, core.LoraSettings]:
    st.subheader("2. The model and LoRA's settings")
    st.selectbox("Base model", core.BASES, key=K.BASE, format_func=pickers.label,
                 help="The bundled causal LMs; a fresh copy of its weights is trained, never the one other pages use.")
    base = ss[K.BASE]
    try:
        names = core.linear_modules_of(base)
    except PlaygroundError as exc:
        st.error(describe(exc))
        st.stop()
    ss[K.TARGETS] = [t for t in ss.get(K.TARGETS, []) if t in names]
    c1, c2, c3 = st.columns(3)
    with c1:
        _number("rank")
        _number("alpha")
    with c2:
        _number("learning_rate", "number", format="%.5f")
        _number("steps", "number")
    with c3:
        _number("batch_size")
        _number("heldout_fraction")
    st.multiselect("Layers to adapt (target modules)", names, key=K.TARGETS,
                   help="The Linear layers of every decoder block that get a LoRA pair, by name: q/k/v/o_proj are the "
                        "attention's projections, gate/up/down_proj the MLP's. More layers: more capacity, slower steps.")
    with st.expander("More settings"):
        m1, m2, m3, m4 = st.columns(4)
        with m1:
            _number("max_tokens")
        with m2:
            _number("eval_every", "number")
        with m3:
            _number("threads", "number")
        with m4:
            _number("seed", "number")
    values = {n: ss[key(n)] for n in NUMBERS}
    return base, core.LoraSettings(**values, target_modules=tuple(ss[K.TARGETS]))


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def launch(base: str, s: core.LoraSettings, ex: core.Examples) -> None:
    st.subheader("3. Train")
    if not s.target_modules:
        st.info("Pick at least one layer to adapt (above) to train.")
        return
    held = ss.get(K.ESTIMATE)
    if held is None or held[0] != (base, s, ex.digest):
        try:
            est = core.estimate(base, s, ex, cache.tokenizer(base))
        except PlaygroundError as exc:
            st.error(describe(exc))
            return
        ss[K.ESTIMATE] = held = ((base, s, ex.digest), est)
    est: core.Estimate = held[1]
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Estimated time", _seconds(est.seconds))
    c2.metric("Estimated memory", f"{est.memory_bytes / 2**30:.2f} GiB")
    c3.metric("Tokens read", f"{est.tokens:,}")
    c4.metric("Numbers trained", f"{est.trainable:,}")
    st.caption("Estimate: " + est.how)
    stem = core.EXAMPLES_NAME if ex.source.startswith("bundled") else ex.source.rsplit(".", 1)[0]
    if not ss.get(K.NAME) or ss[K.NAME] in core.list_runs():
        ss[K.NAME] = core.free_name(stem if base == core.DEFAULT_BASE else f"{stem}-gemma")
    c1, c2 = st.columns([3, 1])
    c1.text_input("Run name", key=K.NAME, max_chars=40,
                  help="Lower-case letters, digits, '-' and '_': the tuned model's id is lora:<name>.")
    c2.write("")
    if c2.button("Start training", key=K.START, type="primary"):
        try:
            core.start(ss[K.NAME], base, s, ex)
        except PlaygroundError as exc:
            st.error(describe(exc))
            return
        ss[K.RUN] = core.check_name(ss[K.NAME])
        ss.pop(K.BEFORE_AFTER, None)
        st.rerun()


def loss_figure(status: core.RunStatus) -> go.Figure:
    """Training loss per step and held-out loss at its measurements (the data are the real losses)."""
    fig = go.Figure()
    if status.train_loss:
        x, y = zip(*status.train_loss)
        fig.add_trace(go.Scatter(x=list(x), y=list(y), mode="lines", name="training (each step's batch)",
                                 line=dict(color="#1f77b4")))
    if status.heldout_loss:
        x, y = zip(*status.heldout_loss)
        fig.add_trace(go.Scatter(x=list(x), y=list(y), mode="lines+markers", name="held-out (never trained on)",
                                 line=dict(color="#d62728")))
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), xaxis=dict(title="step", range=[0, status.steps]),
                      yaxis=dict(title="loss (nats per response token)", rangemode="tozero"),
                      legend=dict(orientation="h", y=1.12))
    return fig


def runs() -> core.RunStatus | None:
    """The run picked, drawn live while it trains; None when there is no run yet."""
    names = core.list_runs()
    if not names:
        st.info("No run yet: start one above. It keeps training when you switch pages.")
        return None
    st.subheader("4. The run")
    if ss[K.RUN] not in names:
        ss[K.RUN] = names[0]
    st.selectbox("Run", names, key=K.RUN, help="Every run on this server, newest first.")
    try:
        first = core.status(ss[K.RUN])
    except PlaygroundError as exc:
        st.error(describe(exc))
        return None

    @st.fragment(run_every=2.0 if first.active else None)
    def live() -> None:
        try:
            s = core.status(ss[K.RUN])
        except PlaygroundError as exc:
            st.error(describe(exc))
            return
        _show(s)
        if first.active and not s.active:
            st.rerun(scope="app")  # finished: the sections below need the saved adapter

    live()
    return core.status(ss[K.RUN])


_STATES = {"starting": "starting (loading the model in its own process)", "running": "training",
           "stopping": "stopping at the end of this step", "stopped": "stopped (resumable)", "done": "finished",
           "failed": "failed"}


def _show(s: core.RunStatus) -> None:
    note = ss.pop(K.NOTE, None)
    if note:
        st.success(note)
    c = st.columns(6)
    c[0].metric("Step", f"{s.step} / {s.steps}")
    c[1].metric("Training loss", f"{s.train_loss[-1][1]:.3f}" if s.train_loss else "–")
    c[2].metric("Held-out loss", f"{s.heldout_loss[-1][1]:.3f}" if s.heldout_loss else "–")
    c[3].metric("Speed", f"{s.tokens_per_second:,.0f} tok/s" if s.tokens else "–", help="Tokens read per second of training (padded batches).")
    c[4].metric("Time left", _seconds(s.eta_seconds) if s.eta_seconds is not None else "–")
    c[5].metric("Peak memory", f"{s.peak_bytes / 2**30:.2f} GiB" if s.peak_bytes else "–",
                help="The training process's peak resident memory, as measured (the base's weights, torch, the "
                     "activations and logits of a batch).")
    st.progress(min(s.step / max(s.steps, 1), 1.0), text=f"{s.name}: {_STATES.get(s.state, s.state)} · "
                f"{pickers.label(s.base)} · rank {s.settings.rank}, alpha {s.settings.alpha}, "
                f"{', '.join(s.settings.target_modules)}, learning rate {s.settings.learning_rate:g}, "
                f"batch {s.settings.batch_size}")
    if s.state == "failed":
        st.error(s.message or "The training failed.")
    st.plotly_chart(loss_figure(s), key="finetune_loss", config={"displayModeBar": False})
    if s.saved_step:
        st.caption(f"Saved at step {s.saved_step}: {core.run_folder(s.name) / 'checkpoint'} (adapter as safetensors, "
                   f"optimizer state, manifest with the settings and the data's sha256 {s.data_sha256[:12]}…; "
                   f"data: {s.data_source}).")
    b1, b2, _ = st.columns([1, 1, 4])
    if s.active:
        if b1.button("Stop", key=K.STOP, disabled=s.state == "stopping"):
            core.stop(s.name)
            st.rerun(scope="fragment")
    elif s.state in ("stopped", "failed") and s.step < s.steps:
        if b1.button("Resume", key=K.RESUME, type="primary"):
            try:
                core.start(s.name, resume=True)
            except PlaygroundError as exc:
                st.error(describe(exc))
                return
            ss.pop(K.BEFORE_AFTER, None)
            st.rerun(scope="app")


def _fresh(model_id: str) -> None:
    """Forget a loaded tuned entry older than its checkpoint (its run was resumed and saved again)."""
    if core.stale(model_id):
        cache.causal_lm.clear(model_id)


def before_after(s: core.RunStatus | None) -> None:
    if s is None or not s.saved_step:
        return
    st.subheader("5. Before and after")
    if s.active:
        st.caption(f"The run is training: this compares the base with its last checkpoint (step {s.saved_step}).")
    st.text_area("Prompts, one a line", key=K.PROMPTS, height=90, max_chars=2_000,
                 help="None of them is among the bundled training pairs. Greedy, 40 new tokens each.")
    prompts = [p.strip() for p in ss[K.PROMPTS].splitlines() if p.strip()][:6]
    wanted = (s.name, s.saved_step, tuple(prompts))
    if st.button("Compare base and tuned", key=K.COMPARE, disabled=not prompts):
        _fresh(s.model_id)
        base = models.require(s.base)
        tuned = models.require(s.model_id)
        try:
            with st.spinner(f"Generating {len(prompts)} answers with each model…"):
                ss[K.BEFORE_AFTER] = (wanted, core.before_after(base, tuned, prompts))
        except PlaygroundError as exc:
            st.error(describe(exc))
            return
    held = ss.get(K.BEFORE_AFTER)
    if held is None or held[0][0] != s.name:
        st.caption("Press the button to see both models answer.")
        return
    if held[0] != wanted:
        st.caption("These answers are from other prompts or an earlier checkpoint; press the button again.")
    base_label = get_model(s.base).label
    left, right = st.columns(2)
    left.markdown(f"**Before: {base_label}**")
    right.markdown(f"**After: tuned, step {held[0][1]}**")
    for r in held[1]:
        st.caption(f"Prompt: {r.prompt}")
        left, right = st.columns(2)
        left.code(r.before or "(nothing)", language=None, wrap_lines=True)
        right.code(r.after or "(nothing)", language=None, wrap_lines=True)


def catalogue(s: core.RunStatus | None) -> None:
    if s is None or not s.saved_step:
        return
    st.subheader("6. In the catalogue")
    _fresh(s.model_id)
    spec = get_model(s.model_id)
    st.markdown(f"The tuned model is the catalogue entry **`{spec.id}`** ({spec.label}): its base's tokenizer and "
                "the adapter merged into a fresh copy of the base's weights, so every page runs it like a bundled "
                "model. Open it beside its base:")
    chat = bool(get_model(s.base).has_chat_template)
    prompt = core.BEFORE_AFTER_PROMPTS[0] if chat else core.BEFORE_AFTER_PROMPTS[0] + "\n"
    c1, c2, c3 = st.columns(3)
    c1.page_link("views/next_token.py", label="Next token: tuned vs base", icon=":material/casino:",
                 query_params={"model_a": spec.id, "model_b": s.base, "chat": str(chat).lower(), "prompt": prompt})
    c2.page_link("views/attention.py", label="Attention: tuned vs base", icon=":material/grid_on:",
                 query_params={"model_a": spec.id, "model_b": s.base, "text": prompt})
    c3.page_link("views/compare.py", label="Compare: tuned vs base", icon=":material/compare:",
                 query_params={"models": f"{spec.id},{s.base}", "prompt": core.BEFORE_AFTER_PROMPTS[0]})
    st.caption("Prompt A/B and the sidebar list it among the models too." +
               ("" if chat else " Gemma 3 is a base model: the training format is the prompt and a newline."))


def finish() -> None:
    state.to_url(URL)
