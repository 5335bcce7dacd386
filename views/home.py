"""Home: what LLM Playground is and what each page shows."""

from __future__ import annotations

import streamlit as st

from components import nav, state

st.title("LLM Playground")
st.write(
    "Learn how language models work by looking inside them. Everything here runs on your CPU, "
    "with no account: three small models are bundled, and any model from the Hugging Face Hub can be added."
)
st.write(f"The model picked in the sidebar (**{state.current_model()}**) is the one each page starts with.")

for path, title, icon, description in nav.existing():
    if path.name == "home.py":
        continue
    st.page_link(str(path), label=f"**{title}** — {description}", icon=icon)

with st.expander("How to read this app"):
    st.markdown(
        "- **Bundled models**: SmolLM2 135M Instruct (a chat model), Gemma 3 270M (a base model with no chat template) "
        "and all-MiniLM-L6-v2 (a sentence encoder). The first use of each converts its weights once; later uses load in about a second.\n"
        "- **Precision variants** (bf16, int8) of the same weights show what quantization saves and costs.\n"
        "- **Any Hub model**: type its id in the sidebar. Only safetensors weights are downloaded, and only if they fit in memory.\n"
        "- **Links reproduce views**: the model and each page's main settings are in the URL."
    )
