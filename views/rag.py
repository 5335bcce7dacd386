"""RAG builder: documents -> chunks -> embeddings in Qdrant -> retrieved passages -> the exact prompt ->
an answer with citations; then A/B two setups, evaluate them, save them.

The page is its list of sections (components/rag_sections.py); each returns what the next one needs.
"""

from __future__ import annotations

import streamlit as st

from components import rag_sections as rag
from components import state

catalogue, url = rag.start()
rag.intro()
rag.saved_setups()
documents = rag.documents()  # stops the page when there are none
chunked = rag.chunking(documents)
db = rag.store(catalogue)  # stops the page when the store cannot be reached
indexed = rag.indexing(db, documents, chunked)
rag.collections(db)
if indexed.points == 0:
    st.info("Index the chunks (button above) to retrieve from them: the next steps need the collection.")
    rag.finish(url)
    st.stop()
state.redraw_rest()  # earlier runs may have stopped above: what follows shows the kept values
found = rag.retrieval(db, chunked)
answering = rag.answer(catalogue, found)
rag.embedding_space(db, chunked, found)
setup_b = rag.ab(db, documents, chunked, found, answering)
rag.evaluation(db, documents, chunked, found, setup_b)
rag.finish(url)
