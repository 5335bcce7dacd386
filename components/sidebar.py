"""The shared sidebar: the model picker (catalogue + any Hub id) and the picked model's facts."""

from __future__ import annotations

import streamlit as st

from components import cache, endpoints, hub_gguf, pickers, state
from components.format import human_bytes, human_count
from playground import loading
from playground.errors import PlaygroundError, describe
from playground.registry import get_model


def _use_hub_id() -> None:
    typed = st.session_state.get(state.HUB_ID, "").strip()
    try:
        spec = get_model(typed)
    except PlaygroundError as exc:
        st.session_state["sidebar_hub_error"] = describe(exc)
        return
    st.session_state.pop("sidebar_hub_error", None)
    st.session_state[state.MODEL] = spec.id


def shows(spec) -> str:
    """What the entry's engine can show, in a few words."""
    c = spec.capabilities
    parts = [name for name, ok in (("text", c.generate), ("token probabilities", c.token_logprobs),
                                   ("full distribution", c.distribution), ("top tokens", c.top_distribution and not c.distribution),
                                   ("attention", c.attention), ("hidden states", c.hidden_states)) if ok]
    return ", ".join(parts)


def facts_markdown(f: loading.ModelFacts) -> str:
    kv = f" ({f.kv_heads} key/value)" if f.kv_heads != f.heads else ""
    spec = get_model(f.id)
    rows = [
        ("Engine", f"{spec.engine} (shows {shows(spec)})"),
        ("Parameters", human_count(f.parameters)),
        ("Layers × heads", f"{f.layers} × {f.heads}{kv}"),
        ("Vocabulary", f"{f.vocab_size:,}"),
        ("Context", f"{f.context_length:,} tokens"),
        ("Architecture", f.architecture),
        ("Precision", f.precision),
        ("Memory", human_bytes(f.memory_bytes)),
        ("Chat template", "yes" if f.has_chat_template else "no"),
        ("License", f.license),
        ("Source", f.origin),
    ]
    return "\n".join(f"- **{k}:** {v}" for k, v in rows)


def facts_remote(spec) -> str:
    rows = [("Engine", f"remote (shows {shows(spec)}, where the server returns them)"),
            ("Endpoint", spec.endpoint), ("Model on the server", spec.remote_model)]
    return "\n".join(f"- **{k}:** {v}" for k, v in rows)


def render() -> str:
    """Draw the sidebar; return the picked model id."""
    state.init_shared()
    hub_gguf.apply_pending()
    options = [s.id for s in pickers.catalogue(engines=True)]
    current = st.session_state[state.MODEL]
    try:
        get_model(current)
    except PlaygroundError:  # a bad id in the URL
        st.session_state[state.MODEL] = current = options[0]
    if current not in options:
        options.append(current)
    with st.sidebar:
        st.selectbox("Model", options, format_func=pickers.label, key=state.MODEL,
                     help="Bundled models work offline. bf16 and int8 are precision variants of the same weights; "
                          "'llama.cpp' entries run the bundled GGUF file as it is, on llama.cpp (fast, no attention).")
        with st.expander("Any Hugging Face model"):
            st.text_input("Hub id", key=state.HUB_ID, placeholder="owner/name")
            st.button("Use this model", key="sidebar_use_hub", on_click=_use_hub_id)
            if st.session_state.get("sidebar_hub_error"):
                st.error(st.session_state["sidebar_hub_error"])
            st.divider()
            hub_gguf.render()
        endpoints.render()
        model_id = st.session_state[state.MODEL]
        spec = get_model(model_id)
        st.caption(spec.description)
        if spec.engine == "remote":
            st.markdown(facts_remote(spec))
        elif spec.source == "hub" and loading.local_folder(model_id) is None:
            st.info(f"{spec.id} is not downloaded yet.")
            if st.button("Download", key="sidebar_download"):
                bar = st.progress(0.0)
                try:
                    loading.prepare(model_id, lambda f, m: bar.progress(min(f, 1.0), text=m))
                    st.rerun()
                except PlaygroundError as exc:
                    st.error(describe(exc))
        else:
            try:
                f = cache.facts(model_id)
                st.markdown(facts_markdown(f))
            except PlaygroundError as exc:
                st.error(describe(exc))
            except Exception as exc:  # noqa: BLE001
                st.error(describe(exc))
    state.to_url(state.MODEL_LINK)
    return st.session_state[state.MODEL]


