"""Every cached loader, in one place. Each wraps one core function in `st.cache_resource`.

Cached objects are shared by every browser session and thread: they are never mutated.
Arguments whose name starts with an underscore (progress callbacks) are not hashed.
"""

from __future__ import annotations

import streamlit as st

from playground import loading
from playground.loading import LoadedModel, ModelFacts


@st.cache_resource(show_spinner=False, max_entries=8)
def causal_lm(model_id: str, _progress=None) -> LoadedModel:
    """A causal LM (any precision variant) with its tokenizer."""
    return loading.load_causal_lm(model_id, _progress)


@st.cache_resource(show_spinner=False, max_entries=16)
def remote_model(cache_key: tuple, model_id: str, _api_key: str | None = None, _progress=None):
    """A model on an endpoint. Cached by `engines.remote.cache_key(model_id, key)`, in which a key
    typed for a session enters only as a salted hash: sessions share a model only when they send the
    same key, and the key itself is never a cache key (`_api_key` is not hashed)."""
    from playground.engines import remote
    from playground.registry import get_model

    return remote.load(get_model(model_id), _progress, api_key=_api_key)


@st.cache_resource(show_spinner=False, max_entries=4)
def encoder(model_id: str, _progress=None) -> LoadedModel:
    """An encoder model (eager attention) with its tokenizer."""
    return loading.load_encoder(model_id, _progress)


@st.cache_resource(show_spinner=False, max_entries=16)
def tokenizer(model_id: str, _progress=None):
    """A tokenizer alone: no weights are loaded."""
    return loading.load_tokenizer(model_id, _progress)


@st.cache_resource(show_spinner=False, max_entries=4)
def embedder(model_id: str, _progress=None):
    """A sentence-transformers embedder."""
    return loading.load_sentence_transformer(model_id, _progress)


@st.cache_data(show_spinner=False, max_entries=64)
def facts(model_id: str) -> ModelFacts:
    """Facts of a model from its config and safetensors headers (converting a bundled GGUF once)."""
    return loading.model_facts(model_id)


def any_model(model_id: str, _progress=None) -> LoadedModel:
    """A causal LM or an encoder, whichever the model is, each from its own cache."""
    from playground.registry import get_model

    spec = get_model(model_id)
    return causal_lm(model_id, _progress) if spec.can_generate else encoder(model_id, _progress)


@st.cache_resource(show_spinner=False, max_entries=4)
def _experiment_store(place: str, _url: str | None = None):
    """`place` is the SQLite path, or a hash of the database URL (the URL may carry a password,
    so it is never a cache key; `_url` is not hashed)."""
    from playground.experiments import ExperimentStore

    return ExperimentStore(url=_url) if _url else ExperimentStore(place)


def experiment_store():
    """The experiments database: PostgreSQL when DATABASE_URL is set (shared by every app process),
    else SQLite under data_root(). The store holds no data and each call opens its own connection,
    so one object serves every session safely."""
    import hashlib
    import os

    from playground.database import ENV
    from playground.paths import data_root

    url = (os.environ.get(ENV) or "").strip()
    if url:
        return _experiment_store("postgresql:" + hashlib.sha256(url.encode()).hexdigest(), url)
    return _experiment_store(str(data_root() / "experiments.sqlite3"))


@st.cache_data(show_spinner=False, max_entries=16)
def tokenization(model_id: str, text: str, detail_chars: int | None = None, context_length: int | None = None):
    """`playground.tokens.tokenize` of a text through a model's tokenizer, kept so that toggling a
    view redraws a long text without tokenizing it again. Errors (InputError) are not cached."""
    from playground import tokens

    return tokens.tokenize(tokenizer(model_id), text, model_id=model_id, detail_chars=detail_chars,
                           context_length=context_length)


def _close_qdrant(entry) -> None:
    client, _lock = entry
    client.close()


@st.cache_resource(show_spinner=False, max_entries=4, on_release=_close_qdrant)
def _qdrant(url: str, api_key: str, path: str, _progress=None):
    import threading

    from playground.rag import migration, store

    client = store.connect(url=url or None, api_key=api_key or None, path=path or None)
    if not url and path == str(store.local_path()) and migration.pending():
        try:  # the previous version's local-mode folder: copied in once, then renamed aside
            migration.migrate(client, progress=_progress)
        except BaseException:
            client.close()
            raise
    return client, threading.RLock()


def qdrant(url: str = "", api_key: str = "", _progress=None):
    """(client, lock) for the RAG store: the Qdrant server at `url`, else THE embedded Qdrant Edge
    store (one store object per folder, so every session shares this one). On the first connection
    a folder left by the previous version (local mode) is migrated into it, reporting to
    `_progress(done, total, message)` (playground.rag.migration). Hold the lock around a sequence of
    calls that must not interleave with another session's. Failures (StoreError) are not cached, so
    fixing the URL and rerunning tries again."""
    from playground.rag import store

    url = (url or "").strip()
    if url:
        return _qdrant(url, api_key or "", "")
    return _qdrant("", "", str(store.local_path()), _progress)


def release_qdrant() -> None:
    """Close every cached Qdrant store (frees the embedded store's folder for another process)."""
    _qdrant.clear()
