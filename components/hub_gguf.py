"""The sidebar's 'GGUF file from the Hub' part: list a repo's GGUF files with their size and
quantization, say which will not fit, download one with progress, and make it the current model.

What it leaves out: the Hub calls (playground.hub) and running the file (playground.engines.llamacpp).
"""

from __future__ import annotations

import streamlit as st

from components import state
from components.format import human_bytes
from playground import hub
from playground.errors import PlaygroundError, describe
from playground.registry import gguf_id

REPO = "sidebar_gguf_repo"
LIST = "sidebar_gguf_list"
FILES = "sidebar_gguf_files"  # the last listing: (repo, [GGUFFile])
PICK = "sidebar_gguf_pick"
DOWNLOAD = "sidebar_gguf_download"
ERROR = "sidebar_gguf_error"
PENDING = "sidebar_pending_model"  # a model to pick at the start of the next run


def apply_pending() -> None:
    """Make a just-downloaded file the current model (called before the sidebar's picker is drawn)."""
    pending = st.session_state.pop(PENDING, None)
    if pending:
        st.session_state[state.MODEL] = pending


def _list() -> None:
    repo = st.session_state.get(REPO, "").strip()
    st.session_state.pop(ERROR, None)
    if not repo:
        st.session_state[ERROR] = "Type a Hub repo id first, e.g. 'bartowski/SmolLM2-135M-Instruct-GGUF'."
        return
    try:
        st.session_state[FILES] = (repo, hub.list_gguf_files(repo))
    except PlaygroundError as exc:
        st.session_state[FILES] = (repo, [])
        st.session_state[ERROR] = describe(exc)


def _fits(f: hub.GGUFFile) -> str:
    try:
        hub.check_gguf_fits(f)
        return "yes"
    except PlaygroundError:
        return f"no: needs {human_bytes(hub.gguf_memory_needed(f.size))}"


def render() -> None:
    """Draw inside the sidebar's Hub expander."""
    st.markdown("**A GGUF file from the Hub** (runs on llama.cpp)")
    st.text_input("GGUF repo", key=REPO, placeholder="owner/name-GGUF", max_chars=200,
                  help="A Hub repo that holds .gguf files; each quantization is a file of its own.")
    st.button("List its GGUF files", key=LIST, on_click=_list)
    if st.session_state.get(ERROR):
        st.error(st.session_state[ERROR])
    repo, files = st.session_state.get(FILES, ("", []))
    if not files:
        return
    names = [f.name for f in files]
    if st.session_state.get(PICK) not in names:
        st.session_state[PICK] = next((f.name for f in files if _fits(f) == "yes"), names[0])
    by_name = {f.name: f for f in files}
    st.dataframe([{"file": f.name, "quantization": f.quantization, "size": human_bytes(f.size), "fits": _fits(f)}
                  for f in files], hide_index=True)
    st.selectbox("File", names, key=PICK,
                 format_func=lambda n: f"{n} · {by_name[n].quantization} · {human_bytes(by_name[n].size)}")
    picked = by_name[st.session_state[PICK]]
    cached = hub.local_gguf(repo, picked.name) is not None
    if st.button("Use it" if cached else "Download and use", key=DOWNLOAD, icon=":material/download:"):
        bar = st.progress(0.0, text=f"{picked.name}…")
        try:
            hub.download_gguf(repo, picked.name, lambda f, m: bar.progress(min(max(f, 0.0), 1.0), text=m))
        except PlaygroundError as exc:
            bar.empty()
            st.error(describe(exc))
            return
        st.session_state[PENDING] = gguf_id(repo, picked.name)  # the picker is drawn already: next run
        st.rerun()
