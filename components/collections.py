"""The collection browser: a table of what each collection holds, the chunks of one source with
their payloads, and deleting a source or a whole collection after a confirmation.

`browser(client, lock, key="coll")` draws it; every widget key starts with `key` so the page can
place it once. Errors of the store are shown with `st.error`, never as a traceback.

What it leaves out: computing anything (playground.rag.browse), connecting (components.cache.qdrant).
"""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from playground.errors import PlaygroundError, describe
from playground.rag import browse


def _index_label(c: browse.CollectionSummary) -> str:
    return "managed by the server" if c.index is None else c.index.label


def browser(client, lock, key: str = "coll") -> None:
    """Draw the browser for the store `client` (hold `lock` around store calls)."""
    done = st.session_state.pop(f"{key}_done", None)  # what the last click deleted, said once
    if done:
        st.success(done)
    try:
        with lock:
            summaries = browse.summaries(client)
    except PlaygroundError as exc:
        st.error(describe(exc))
        return
    if not summaries:
        st.info("No collection yet: index some documents first.")
        return
    st.dataframe(pd.DataFrame([{
        "collection": c.name, "points": c.points, "sources": len(c.sources), "embedder": c.embedder or "?",
        "chunking": c.chunking or "?", "distance": c.distance, "on disk": c.size_label, "index": _index_label(c),
    } for c in summaries]), hide_index=True, key=f"{key}_table")
    names = [c.name for c in summaries]
    name = st.selectbox("Collection", names, key=f"{key}_name")
    c = next(s for s in summaries if s.name == name)
    st.caption(f"{c.points:,} chunks from {len(c.sources):,} source(s) · {c.dim}-dimensional {c.distance} vectors "
               f"made with {c.embedder or 'an unrecorded embedder'} · {_index_label(c)}")
    if c.sources:
        labels = {f"{s.source} ({s.chunks:,} chunks)": s.source for s in c.sources}
        picked = st.selectbox("Source", list(labels), key=f"{key}_source")
        source = labels[picked]
        try:
            with lock:
                chunks = browse.source_chunks(client, name, source)
        except PlaygroundError as exc:
            st.error(describe(exc))
            chunks = []
        if chunks:
            st.dataframe(pd.DataFrame([{"position": s.chunk.position, "start": s.chunk.start, "end": s.chunk.end,
                                        "tokens": s.chunk.tokens, "text": s.chunk.text, "id": s.id} for s in chunks]),
                         hide_index=True, key=f"{key}_chunks")
            with st.expander("Payload of the first chunk, as stored"):
                st.code(json.dumps(chunks[0].payload, indent=1, ensure_ascii=False), language="json")
        sure = st.checkbox(f"Yes, delete the {len(chunks):,} chunks of {source!r}", key=f"{key}_sure_source")
        if st.button("Delete this source", key=f"{key}_delete_source", disabled=not sure):
            try:
                with lock:
                    n = browse.delete_source(client, name, source)
                st.session_state[f"{key}_done"] = f"Deleted {n:,} chunks of {source!r} from {name!r}."
                st.session_state.pop(f"{key}_sure_source", None)
                st.rerun()
            except PlaygroundError as exc:
                st.error(describe(exc))
    typed = st.text_input(f"To delete the whole collection, type its name ({name})", key=f"{key}_confirm_name")
    if st.button("Delete this collection", key=f"{key}_delete_collection", disabled=typed.strip() != name):
        try:
            with lock:
                browse.delete_collection(client, name)
            st.session_state[f"{key}_done"] = f"Deleted the collection {name!r} ({c.points:,} chunks)."
            st.session_state.pop(f"{key}_confirm_name", None)
            st.rerun()
        except PlaygroundError as exc:
            st.error(describe(exc))
