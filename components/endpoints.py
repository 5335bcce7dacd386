"""The sidebar's 'Model server' part: add an OpenAI-compatible endpoint (vLLM, TGI, Ollama, LM
Studio, llama.cpp's server) by name and URL, list the models it serves, pick one, remove it.

The endpoints a person added are kept in the data folder with their URLs and the names of the
environment variables that hold their keys (playground.endpoints), so they survive a restart. A key
typed here is kept for this browser session only: in session state, never in a link, a file or a
message; it reaches the server in the Authorization header and nowhere else.

What it leaves out: HTTP (playground.engines.remote).
"""

from __future__ import annotations

import streamlit as st

from components import state
from playground import endpoints as store
from playground.errors import PlaygroundError, describe
from playground.options import bounds
from playground.registry import DEFAULT_CHAT_MODEL, endpoint_id, get_model

NAME = "sidebar_endpoint_name"
URL = "sidebar_endpoint_url"
KEY_ENV = "sidebar_endpoint_key_env"
ADD = "sidebar_endpoint_add"
MESSAGE = "sidebar_endpoint_message"
LISTED = "_endpoint_models"  # {endpoint name: [model ids it served when last asked]}: this session's listing
CONFIRM = "sidebar_endpoint_confirm_remove"  # the endpoint whose Remove was clicked once


def _key_widget(name: str) -> str:
    return f"sidebar_endpoint_key_{name}"


def session_key(endpoint: str) -> str | None:
    """The key typed for `endpoint` in this session, if any (else the endpoint's variable is used)."""
    value = st.session_state.get(_key_widget(endpoint), "")
    return value.strip() or None


def listed_entries() -> list:
    """Catalogue entries for the models this session listed on its endpoints."""
    out = []
    for name, models in st.session_state.get(LISTED, {}).items():
        for model in models:
            try:
                out.append(get_model(endpoint_id(name, model)))
            except PlaygroundError:
                continue
    return out


def _add() -> None:
    ss = st.session_state
    try:
        e = store.add_endpoint(ss.get(NAME, ""), ss.get(URL, ""), key_env=ss.get(KEY_ENV, "") or None)
    except PlaygroundError as exc:
        ss[MESSAGE] = ("error", describe(exc))
        return
    ss[MESSAGE] = ("success", f"Added {e.name} ({e.url}). List its models below.")
    ss[NAME] = ss[URL] = ""


def _list(name: str) -> None:
    from playground.engines import remote

    ss = st.session_state
    try:
        served = remote.list_models(name, api_key=session_key(name))
    except PlaygroundError as exc:
        ss[MESSAGE] = ("error", describe(exc, secrets=(session_key(name),)))
        return
    ss.setdefault(LISTED, {})[name] = [m.id for m in served]
    if served:
        ss[state.MODEL] = endpoint_id(name, served[0].id)  # a callback runs before the picker is drawn
        ss[MESSAGE] = ("success", f"{name} serves {len(served)} model(s): "
                       f"{', '.join(m.id for m in served[:6])}{' …' if len(served) > 6 else ''}. "
                       f"{served[0].id} is picked; all of them are in the model lists now.")
    else:
        ss[MESSAGE] = ("warning", f"{name} answers but lists no models.")


def _set_timeout(name: str) -> None:
    try:
        store.update_endpoint(name, timeout=float(st.session_state[f"sidebar_endpoint_timeout_{name}"]))
    except PlaygroundError as exc:
        st.session_state[MESSAGE] = ("error", describe(exc))


def _remove(name: str) -> None:
    ss = st.session_state
    if ss.get(CONFIRM) != name:  # the first click asks
        ss[CONFIRM] = name
        return
    ss.pop(CONFIRM, None)
    store.remove_endpoint(name)
    ss.get(LISTED, {}).pop(name, None)
    ss.pop(_key_widget(name), None)
    if state.current_model().startswith(f"endpoint:{name}/"):
        ss[state.MODEL] = DEFAULT_CHAT_MODEL
    ss[MESSAGE] = ("success", f"Removed {name}. Its URL can be added again at any time.")


def render() -> None:
    """Draw inside the sidebar."""
    with st.expander("A model server (OpenAI API)"):
        st.caption("vLLM, TGI, Ollama, LM Studio, llama.cpp's server, Hugging Face Inference Providers: anything "
                   "that speaks the OpenAI chat/completions API. Keys stay in your session or in an environment "
                   "variable, never on disk.")
        st.text_input("Name", key=NAME, placeholder="team-vllm", max_chars=64)
        st.text_input("Base URL", key=URL, placeholder="http://127.0.0.1:8000/v1", max_chars=500)
        st.text_input("Key variable (optional)", key=KEY_ENV, placeholder="VLLM_API_KEY", max_chars=128,
                      help="The name of an environment variable of the server process that holds the key. "
                           "Or type a key below, for this session only.")
        st.button("Add endpoint", key=ADD, on_click=_add)
        message = st.session_state.pop(MESSAGE, None)
        if message:
            getattr(st, message[0])(message[1])
        try:
            added = store.list_endpoints()
        except PlaygroundError as exc:
            st.error(describe(exc))
            return
        for e in added:
            st.markdown(f"**{e.name}** · `{e.url}`")
            st.caption(e.key_status)
            st.text_input("Key for this session", key=_key_widget(e.name), type="password",
                          help="Kept in this browser session only; sent to this server alone.")
            tb = bounds(store.Endpoint, "timeout")
            st.number_input("Timeout (s)", float(tb.lo), float(tb.hi), value=float(e.timeout), step=float(tb.step or 1),
                            key=f"sidebar_endpoint_timeout_{e.name}", on_change=_set_timeout, args=(e.name,),
                            help=f"{tb.help}. A slow server past it is a clear message; raise it for big models.")
            a, b = st.columns(2)
            a.button("List models", key=f"sidebar_endpoint_list_{e.name}", on_click=_list, args=(e.name,))
            asked = st.session_state.get(CONFIRM) == e.name
            b.button("Yes, remove" if asked else "Remove", key=f"sidebar_endpoint_remove_{e.name}", on_click=_remove,
                     args=(e.name,), type="primary" if asked else "secondary")
            if asked:
                st.warning(f"Remove {e.name}? Press *Yes, remove* to forget its URL (it can be added again).")
