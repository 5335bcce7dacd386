"""Compare models: one prompt to 2-4 models streamed side by side with their numbers; precision
variants (fp32 / bf16 / int8) with what they save and cost; perplexity on a text; the Hub browser."""

from __future__ import annotations

import streamlit as st

from components import answer_tokens, cache, special_tokens, state
from components import pickers
from components.pickers import generators, label
from components import compare as view
from components import constrain as constrain_ui
from components.format import human_bytes, human_count
from components.models import require
from playground import compare as core
from playground import hub, links, loading
from playground.links import Link
from playground.errors import PlaygroundError, describe
from playground.generate import GenerationSettings
from playground.options import bounds
from playground.registry import DEFAULT_BASE_MODEL, DEFAULT_CHAT_MODEL, get_model, variants


class K:
    models = "compare_models"  # the picked entries (multiselect)
    models_text = "compare_models_text"  # the same, comma-joined, for the URL
    prompt = "compare_prompt"
    per_model = "compare_per_model"
    sequential = "compare_sequential"
    run = "compare_run"
    shade = "compare_shade"  # the answers' uncertainty shading
    plain = "compare_plain"  # special tokens typed in the prompt go as plain text
    result = "compare_result"
    result_constraint = "compare_result_constraint"  # the constraint the held result ran under
    variant_base = "compare_variant_base"
    variant_text = "compare_variant_text"
    variant_run = "compare_variant_run"
    variant_result = "compare_variant_result"
    ppl_sample = "compare_ppl_sample"
    ppl_text = "compare_ppl_text"
    ppl_run = "compare_ppl_run"
    ppl_result = "compare_ppl_result"
    hub_query = "compare_hub_query"
    hub_sort = "compare_hub_sort"
    hub_search = "compare_hub_search"
    hub_found = "compare_hub_found"
    hub_message = "compare_hub_message"

    @staticmethod
    def setting(slot: str, name: str) -> str:
        """A generation setting: slot "all" (shared) or "0".."3" (one column)."""
        return f"compare_{slot}_{name}"


SETTINGS = ("max_new_tokens", "temperature", "top_p", "seed", "stop")
SHORT = {"max_new_tokens": "max", "temperature": "temp", "top_p": "top_p", "seed": "seed", "stop": "stop"}
DEFAULT_PROMPT = "Write a haiku about the sea."
DEFAULT_SETTINGS = {"max_new_tokens": 32, "temperature": 0.0, "top_p": 1.0, "seed": 0, "stop": ""}
OWN_TEXT = "Your own text"


def setting_links(slot: str, suffix: str = "") -> dict[str, Link]:
    """The links of one slot's generation settings, each checked against GenerationSettings' bounds."""
    return {K.setting(slot, n): Link(f"{SHORT[n]}{suffix}", links.Text(200) if n == "stop"
                                     else links.Number.of(GenerationSettings, n)) for n in SETTINGS}






def default_models() -> list[str]:
    """The sidebar's model (if it generates) against a contrasting one: chat vs base by default."""
    picked = state.current_model()
    try:
        first = picked if get_model(picked).can_generate else DEFAULT_CHAT_MODEL
    except PlaygroundError:
        first = DEFAULT_CHAT_MODEL
    other = DEFAULT_BASE_MODEL if get_model(first).base_id != DEFAULT_BASE_MODEL else DEFAULT_CHAT_MODEL
    return [first, other]


def add_to_comparison(model_id: str) -> None:
    picked = list(st.session_state.get(K.models, []))
    if model_id in picked:
        return
    if len(picked) >= core.MAX_MODELS:
        st.session_state[K.hub_message] = (
            f"{model_id} is in the catalogue, but {core.MAX_MODELS} models are already picked: remove one above first.")
        return
    st.session_state[K.models] = picked + [model_id]
    st.session_state[K.hub_message] = f"{model_id} was added to the models to compare (top of the page)."


def use_sample() -> None:
    sample = st.session_state[K.ppl_sample]
    if sample in core.SAMPLES:
        st.session_state[K.ppl_text] = core.SAMPLES[sample]


# --- state and URL -------------------------------------------------------------------------

options = generators()
shared = {K.setting("all", n): v for n, v in DEFAULT_SETTINGS.items()}
URL = {K.models_text: Link("models", links.Text(500)), K.prompt: Link("prompt", links.Text()),
       K.per_model: Link("per_model", links.Flag()), K.sequential: Link("one_at_a_time", links.Flag()),
       K.variant_base: Link("variants_of", links.Model("generate")),
       K.ppl_sample: Link("sample", links.Choice((*core.SAMPLES, OWN_TEXT))),
       K.hub_query: Link("hub_q", links.Text(200)), K.hub_sort: Link("hub_sort", links.Choice(("downloads", "likes")))}
URL.update(setting_links("all"))
state.init(
    {K.models_text: ",".join(default_models()), K.prompt: DEFAULT_PROMPT, K.per_model: False, K.sequential: False,
     K.variant_base: get_model(default_models()[0]).base_id, K.ppl_sample: next(iter(core.SAMPLES)),
     K.hub_query: "", K.hub_sort: "downloads", **shared},
    URL,
)
state.init({K.variant_text: core.SAMPLES["Encyclopedia prose"]})


def keep_in_bounds(slot: str) -> None:
    """A setting from a hand-edited URL outside its bounds is brought back inside (a slider would refuse it)."""
    for name in ("max_new_tokens", "temperature", "top_p", "seed"):
        b = bounds(GenerationSettings, name)
        key = K.setting(slot, name)
        st.session_state[key] = type(st.session_state[key])(min(max(st.session_state[key], b.lo), b.hi))


keep_in_bounds("all")
state.keep(K.models, K.ppl_text)
if K.models not in st.session_state:
    wanted = [m.strip() for m in st.session_state[K.models_text].split(",") if m.strip()]
    options.extend(m for m in wanted if m not in options and pickers.usable_generator(m))  # e.g. an endpoint's model
    unknown = [m for m in wanted if m not in options]
    if unknown:
        st.warning(f"The link asked to compare {', '.join(map(repr, unknown[:8]))}: not a model that generates in "
                   f"the catalogue, so {'the others are compared' if len(unknown) < len(wanted) else 'the default models are compared'}.")
    if len([m for m in wanted if m in options]) > core.MAX_MODELS:
        st.warning(f"The link asked to compare {len(wanted)} models; at most {core.MAX_MODELS} run side by side, "
                   f"so the first {core.MAX_MODELS} are compared.")
    st.session_state[K.models] = [m for m in wanted if m in options][: core.MAX_MODELS] or default_models()
if K.ppl_text not in st.session_state:
    st.session_state[K.ppl_text] = core.SAMPLES.get(st.session_state[K.ppl_sample], next(iter(core.SAMPLES.values())))
for m in st.session_state[K.models]:
    if m not in options:  # e.g. a Hub model picked from the URL and already downloaded
        options.append(m)

# --- page ------------------------------------------------------------------------------------

st.title("Compare models")
st.write(
    "Put one prompt to two to four models and watch them answer side by side, with the numbers that decide "
    "which to use: speed, memory, length and how each answer ended. The same model at fp32, bf16 and int8 "
    "shows what quantization saves and what it costs."
)
with st.expander("How to read this"):
    st.markdown(
        "- **Side by side**: each model reads the prompt through its own chat template if it has one "
        "(SmolLM2 does: it answers), raw otherwise (Gemma 3 270M is a base model: it *continues* your text). "
        "Open *Exact prompt the model read* under a column to see the difference.\n"
        "- **Tokens/s** counts tokens after the first; **first token** is the time to read the prompt and produce one token. "
        "Tokens are counted with each model's own tokenizer, so 32 tokens of one model is not the same text length as 32 of another. "
        "**Stopped**: *end of turn* / *end of sequence* (the model chose to stop), *max tokens* (cut off), *stop sequence*.\n"
        "- Models generating **at once** share this machine's CPU, so each is slower than alone; tick *one at a time* for fair speeds.\n"
        "- **Precision**: bf16 halves every weight; dynamic int8 stores Linear layers in 8 bits and leaves embeddings in fp32 "
        "(for Gemma, whose 262k-token embedding is most of the model, int8 saves little). The **llama.cpp** entry is the "
        "bundled Q4 GGUF file itself, on another engine: about 4.5 bits a weight, and llama.cpp's own fast kernels. **Mean KL** measures how far each "
        "variant's next-token distribution departs from fp32 (0 = identical); **top-1 agreement** is how often both would pick the same token.\n"
        "- **Perplexity** = exp(mean surprisal): about how many tokens the model was hesitating between, on average. Red tokens surprised it. "
        "Perplexity is per token, so models with different tokenizers are better compared by **bits per byte**. Try the shuffled sample.\n"
        "- The setup is in the URL: copy it to share a comparison."
    )

st.multiselect(
    "Models to compare", options, key=K.models, format_func=label, max_selections=core.MAX_MODELS,
    help="2 to 4 entries of the catalogue: bundled models, their bf16 / int8 variants, downloaded Hub models. "
         "The same model twice is fine: give each its own settings.",
)
picked: list[str] = list(st.session_state[K.models])
st.session_state[K.models_text] = ",".join(picked)

tab_run, tab_variants, tab_ppl, tab_hub = st.tabs(["Side by side", "Precision variants", "Perplexity", "Find on the Hub"])


def settings_widgets(slot: str, container) -> None:
    b = {n: bounds(GenerationSettings, n) for n in ("max_new_tokens", "temperature", "top_p", "seed")}
    c1, c2, c3, c4, c5 = container.columns([1, 1, 1, 1, 2])
    c1.number_input("Max new tokens", int(b["max_new_tokens"].lo), int(b["max_new_tokens"].hi),
                    key=K.setting(slot, "max_new_tokens"), help=b["max_new_tokens"].help)
    c2.slider("Temperature", float(b["temperature"].lo), float(b["temperature"].hi), step=b["temperature"].step,
              key=K.setting(slot, "temperature"), help=b["temperature"].help)
    c3.slider("Top-p", float(b["top_p"].lo), float(b["top_p"].hi), step=b["top_p"].step,
              key=K.setting(slot, "top_p"), help=b["top_p"].help)
    c4.number_input("Seed", int(b["seed"].lo), int(b["seed"].hi), key=K.setting(slot, "seed"), help=b["seed"].help)
    c5.text_input("Stop sequences", key=K.setting(slot, "stop"), placeholder="e.g. \\n\\n, User:",
                  help="Separated by commas; \\n is a newline. Generation stops when one appears.")


def settings_of(slot: str) -> GenerationSettings:
    g = lambda n: st.session_state[K.setting(slot, n)]  # noqa: E731
    return GenerationSettings(max_new_tokens=int(g("max_new_tokens")), temperature=float(g("temperature")),
                              top_p=float(g("top_p")), seed=int(g("seed")), stop=core.parse_stop(g("stop")))


def facts_table(model_ids: list[str]) -> None:
    rows = []
    for mid in model_ids:
        try:
            f = cache.facts(mid)
        except Exception as exc:  # noqa: BLE001 - one bad entry must not hide the others
            rows.append({"model": label(mid), "parameters": "?", "note": describe(exc)})
            continue
        rows.append({"model": label(mid), "parameters": human_count(f.parameters), "precision": f.precision,
                     "memory (est.)": human_bytes(f.memory_bytes), "on disk": human_bytes(f.disk_bytes),
                     "vocabulary": f"{f.vocab_size:,}", "context": f"{f.context_length:,}",
                     "layers × heads": f"{f.layers} × {f.heads}", "chat template": "yes" if f.has_chat_template else "no"})
    st.dataframe(rows, hide_index=True)


# --- side by side ----------------------------------------------------------------------------

with tab_run:
    st.text_area("Prompt", key=K.prompt, height=90, help="The same text goes to every model.")
    plain = special_tokens.check(st.session_state[K.prompt], lambda: special_tokens.tokenizers(picked), K.plain)
    st.toggle("Settings per model", key=K.per_model, help="Off: one set of settings for all. On: each column its own.")
    slots: list[str] = []
    if st.session_state[K.per_model]:
        for i, mid in enumerate(picked):
            slot = str(i)
            state.init({K.setting(slot, n): st.session_state[K.setting("all", n)] for n in SETTINGS},
                       setting_links(slot, str(i)))
            keep_in_bounds(slot)
            settings_widgets(slot, st.expander(f"Column {i + 1}: {label(mid)}", expanded=i == 0))
            slots.append(slot)
    else:
        settings_widgets("all", st.container())
        slots = ["all"] * len(picked)
    st.toggle("One at a time (fair speeds)", key=K.sequential,
              help="Off: all models generate at once and share the CPU. On: one after another, each alone.")

    constraint = constrain_ui.inputs("compare_constrain", help_on="Limit every column's answer, token by token, to "
                                     "a JSON schema, a regex or a list of choices (each model with its own tokenizer).")
    problem = None
    entries: list[core.Entry] = []
    try:
        core.check_entries(picked)
        entries = [core.Entry(mid, settings_of(slot), constraint=constraint) for mid, slot in zip(picked, slots)]
        if constraint is not None:
            problem = constrain_ui.cannot_constrain(picked)
    except PlaygroundError as exc:
        problem = describe(exc)
    if problem:
        st.info(problem)
    pressed = st.button("Compare", key=K.run, type="primary", disabled=problem is not None, icon=":material/play_arrow:")

    shade = answer_tokens.shading_control(K.shade)
    out = st.container()
    if pressed and not problem:
        lms = [require(mid) for mid in picked]
        try:
            sbs = core.SideBySide(lms, st.session_state[K.prompt], entries,
                                  concurrent=not st.session_state[K.sequential], plain=plain)
        except PlaygroundError as exc:
            out.error(describe(exc))
        else:
            with out:
                columns = view.StreamColumns([lm.spec.label for lm in lms], [s.templated for s in sbs.streams],
                                             [e.settings for e in entries], shade)
                try:
                    for update in sbs:
                        columns.update(update)
                finally:
                    if sbs.result is None:
                        sbs.cancel()
            st.session_state[K.result] = sbs.result
            st.session_state[K.result_constraint] = constraint
    elif st.session_state.get(K.result) is not None:
        with out:
            last = st.session_state[K.result]
            st.caption(f"Last comparison, on the prompt {last.text[:80]!r}" + ("…" if len(last.text) > 80 else ""))
            view.comparison_columns(last, shade)
    else:
        with out:
            st.caption("What you are comparing (read from the config and weights files; nothing is loaded until you press Compare):")
            facts_table(picked)
    held_constraint = st.session_state.get(K.result_constraint)
    if st.session_state.get(K.result) is not None and held_constraint is not None:
        with out:
            constrain_ui.verdicts(held_constraint, st.session_state[K.result].runs)

    result: core.Comparison | None = st.session_state.get(K.result)
    if result is not None:
        st.plotly_chart(view.speed_figure(result), key="compare_speed_chart")
        st.dataframe(view.comparison_table(result), hide_index=True)
        a, b, _ = st.columns([1, 1, 3])
        a.download_button("Download JSON", core.to_json(result), file_name="comparison.json", mime="application/json",
                          key="compare_export_json", on_click="ignore", icon=":material/download:")
        b.download_button("Download CSV", core.to_csv(result), file_name="comparison.csv", mime="text/csv",
                          key="compare_export_csv", on_click="ignore", icon=":material/download:")

# --- precision variants ----------------------------------------------------------------------

with tab_variants:
    st.write("The same weights at three precisions, and, for a bundled model, the quantized GGUF file it was made from "
             "run as it is by llama.cpp. bf16 and int8 are made from the fp32 file when loaded; the GGUF file keeps "
             "4-bit weights. What changes is the memory they take, how fast they run, and how far their next-token "
             "distributions move from fp32.")
    bases = [m for m in options if get_model(m).base_id == m]
    if st.session_state[K.variant_base] not in bases:
        st.session_state[K.variant_base] = bases[0]
    st.selectbox("Model", bases, key=K.variant_base, format_func=label)
    base = st.session_state[K.variant_base]
    ids = [v.id for v in variants(base, with_gguf=True)]  # a bundled model's GGUF file on llama.cpp too
    st.text_area("Text the divergence is measured on", key=K.variant_text, height=90)
    what = "fp32, bf16, int8" + (" and the GGUF file on llama.cpp" if len(ids) > 3 else "")
    if st.button(f"Measure {what}", key=K.variant_run, type="primary", icon=":material/speed:"):
        lms = [require(mid) for mid in ids]
        with st.status("Measuring the variants…", expanded=True) as status:
            bar = st.progress(0.0)
            try:
                report = core.variant_report(lms, st.session_state[K.variant_text],
                                             progress=lambda f, m: bar.progress(min(f, 1.0), text=m))
                st.session_state[K.variant_result] = report
                status.update(label="Variants measured", state="complete", expanded=False)
            except PlaygroundError as exc:
                status.update(label="Could not measure the variants", state="error")
                st.error(describe(exc))
    report: core.VariantReport | None = st.session_state.get(K.variant_result)
    if report is not None and report.base_id == base:
        st.dataframe(view.variants_table(report), hide_index=True)
        st.plotly_chart(view.variants_figure(report), key="compare_variants_chart")
        st.plotly_chart(view.kl_positions_figure(report), key="compare_kl_chart")
    else:
        st.caption("Before loading anything: size estimated from the weights files at each precision. "
                   "Press the button to load all three and measure memory, speed and divergence.")
        facts_table(ids)

# --- perplexity ------------------------------------------------------------------------------

with tab_ppl:
    st.write("How surprised each model picked above is by a text: perplexity, and every token coloured by its surprisal.")
    st.selectbox("Sample", [*core.SAMPLES, OWN_TEXT], key=K.ppl_sample, on_change=use_sample,
                 help="Bundled samples; or pick 'Your own text' and type below.")
    st.text_area("Text", key=K.ppl_text, height=120)
    if st.button("Measure perplexity", key=K.ppl_run, type="primary", disabled=not picked, icon=":material/functions:"):
        results = []
        with st.spinner("Scoring the text…"):
            for mid in picked:
                lm = require(mid)
                try:
                    results.append(core.perplexity(lm, st.session_state[K.ppl_text]))
                except PlaygroundError as exc:
                    st.error(describe(exc))
        st.session_state[K.ppl_result] = results
    ppl = st.session_state.get(K.ppl_result)
    if ppl:
        view.perplexity_view(ppl)

# --- Hub -------------------------------------------------------------------------------------

with tab_hub:
    status = hub.status()
    cached = hub.cached_hub_models()
    if not status.reachable:
        st.warning(f"No Hub access, so the Hub cannot be searched. {status.message}", icon=":material/cloud_off:")
    else:
        st.caption(status.message)
        q, s, b = st.columns([3, 2, 1], vertical_alignment="bottom")
        q.text_input("Search text-generation models by name", key=K.hub_query, placeholder="e.g. llama, qwen, smol")
        s.radio("Sort by", ["downloads", "likes"], key=K.hub_sort, horizontal=True)
        if b.button("Search", key=K.hub_search, icon=":material/search:"):
            try:
                st.session_state[K.hub_found] = hub.search(st.session_state[K.hub_query], st.session_state[K.hub_sort], limit=20)
            except PlaygroundError as exc:
                st.session_state[K.hub_found] = []
                st.error(describe(exc))
    if st.session_state.get(K.hub_message):
        st.success(st.session_state.pop(K.hub_message))
    found = st.session_state.get(K.hub_found)
    if status.reachable and found is not None:
        if not found:
            st.info("No text-generation model matches that name.")
        for i, m in enumerate(found):
            if view.hub_result(m, m.id in cached, key=f"compare_hub_dl_{i}"):
                bar = st.progress(0.0, text=f"Downloading {m.id}…")
                try:
                    loading.prepare(m.id, lambda f, msg: bar.progress(min(max(f, 0.0), 1.0), text=msg))
                    bar.progress(1.0, text=f"{m.id} downloaded")
                    cached = hub.cached_hub_models()
                    st.success(f"{m.id} is downloaded and in the catalogue: press *Compare it* below, or pick it above.")
                except PlaygroundError as exc:
                    bar.empty()
                    st.error(describe(exc))
    st.markdown("**Already downloaded** (usable offline):")
    if cached:
        for repo in cached:
            in_use = repo in picked
            c1, c2 = st.columns([4, 1], vertical_alignment="center")
            c1.markdown(f"- `{repo}`" + (" · in the comparison" if in_use else ""))
            if not in_use:
                c2.button("Compare it", key=f"compare_hub_use_{repo}", on_click=add_to_comparison, args=(repo,))
    else:
        st.caption("None yet. Downloaded models land in the Hugging Face cache (HF_HOME) and join the catalogue.")

# --- URL -------------------------------------------------------------------------------------

url = dict(URL)
if st.session_state[K.per_model]:
    for i in range(len(picked)):
        url.update(setting_links(str(i), str(i)))
state.to_url(url)
