"""LLM Playground: the router. Page config, the shared sidebar, the pages that exist, and one
error boundary round them all (components/boundary.py)."""

from __future__ import annotations

import streamlit as st

from components import server

server.start()  # first, before any page runs: every heavy library imported once, under a lock (playground/startup.py)

from components import boundary, nav, sidebar, state  # noqa: E402

st.set_page_config(page_title="LLM Playground", page_icon=":material/neurology:", layout="wide")
pages = [
    st.Page(str(path), title=title, icon=icon, default=path.name == "home.py")
    for path, title, icon, _ in nav.existing()
]
current = st.navigation({"": pages, "Server": server.pages()})
state.restore(current.url_path)  # what a person typed on a page survives a visit to another one
try:
    server.begin(current.url_path)  # this session seen, gone sessions' memory released
    sidebar.render()
    current.run()
except Exception as exc:  # noqa: BLE001 - the one boundary: shown as a message, never a traceback
    if boundary.is_control_flow(exc):  # st.stop / st.rerun / st.switch_page belong to Streamlit
        raise
    boundary.show(exc, current.title)
finally:
    state.remember()
