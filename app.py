"""LLM Playground: the router. Page config, the shared sidebar, and the pages that exist."""

from __future__ import annotations

import streamlit as st

from components import nav, sidebar, state

st.set_page_config(page_title="LLM Playground", page_icon=":material/neurology:", layout="wide")
pages = [
    st.Page(str(path), title=title, icon=icon, default=path.name == "home.py")
    for path, title, icon, _ in nav.existing()
]
current = st.navigation(pages)
state.restore(current.url_path)  # what a person typed on a page survives a visit to another one
try:
    sidebar.render()
    current.run()
finally:
    state.remember()
