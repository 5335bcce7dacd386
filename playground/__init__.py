"""LLM Playground's core: models, tokens, attention, sampling, generation, RAG and experiments.

No Streamlit here: everything is usable from a notebook or a script.
"""
