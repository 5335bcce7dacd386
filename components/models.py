"""Getting a model onto a page: progress while it converts or downloads, errors in the page.

`require_causal_lm(id)` returns a LoadedModel or shows the error and stops the page; the
first load of a bundled GGUF model (a conversion) or of a Hub model (a download) shows a
progress bar, later loads come from the cache.
"""

from __future__ import annotations

import streamlit as st

from components import cache
from playground import loading
from playground.errors import PlaygroundError, describe
from playground.loading import LoadedModel
from playground.registry import get_model


def _needs_long_work(model_id: str) -> bool:
    spec = get_model(model_id)
    if spec.engine == "remote":
        return False
    if spec.source == "hub":
        return loading.local_folder(model_id) is None
    return not loading.is_prepared(model_id)


def load(model_id: str, kind: str = "causal") -> LoadedModel:
    """Load through the cache, with a progress bar when the model must first be converted or downloaded.

    kind: "causal", "encoder", "any". Raises PlaygroundError.
    """
    spec = get_model(model_id)
    if spec.engine == "remote":
        from components import endpoints
        from playground.engines import remote

        key = endpoints.session_key(spec.endpoint)
        with st.spinner(f"Asking {spec.endpoint} for {spec.remote_model}…"):
            return cache.remote_model(remote.cache_key(model_id, key), model_id, key)
    fn = {"causal": cache.causal_lm, "encoder": cache.encoder, "any": cache.any_model}[kind]
    if not _needs_long_work(model_id):
        with st.spinner(f"Loading {model_id}…"):
            return fn(model_id)
    with st.status(f"Preparing {model_id} (first time only)…", expanded=True) as status:
        bar = st.progress(0.0)
        line = st.empty()

        def progress(fraction: float, message: str) -> None:
            bar.progress(min(max(fraction, 0.0), 1.0))
            line.caption(message)

        try:
            lm = fn(model_id, progress)
        except Exception:
            status.update(label=f"Could not prepare {model_id}", state="error")
            raise
        status.update(label=f"{model_id} ready in {lm.load_seconds:.1f} s", state="complete", expanded=False)
    return lm


def require(model_id: str, kind: str = "causal") -> LoadedModel:
    """`load`, or the error in the page and `st.stop()`."""
    try:
        return load(model_id, kind)
    except PlaygroundError as exc:
        st.error(describe(exc))
    except Exception as exc:  # noqa: BLE001 - shown, never a traceback
        st.error(describe(exc))
    st.stop()
    raise RuntimeError("unreachable")


def require_tokenizer(model_id: str):
    try:
        with st.spinner(f"Loading the {model_id} tokenizer…"):
            return cache.tokenizer(model_id)
    except Exception as exc:  # noqa: BLE001
        st.error(describe(exc))
        st.stop()
