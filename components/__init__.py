"""Reusable Streamlit rendering for LLM Playground: figures, token spans, columns, progress.

Components take result dataclasses from `playground` and draw them; they never load a
model (that is components.cache, the one home of every `st.cache_resource` loader).
"""
