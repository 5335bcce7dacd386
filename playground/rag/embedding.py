"""Embedding chunks with a sentence-transformers model: batched, with a progress callback.

`embed(model, texts, progress=...)` returns a float32 array (N, D). Texts are sorted by length
before batching (as sentence-transformers does inside one `encode` call) so that a batch pads
to similar lengths, and the rows come back in the input order. `as_llama_index(model)` wraps
the same model as a LlamaIndex embedding (no network, no API key) for the semantic splitter.

What it leaves out: loading the model (playground.loading.load_sentence_transformer), caching
embeddings (the store skips chunks it already holds, so unchanged chunks are never re-embedded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from playground.errors import InputError

EmbedProgress = Callable[[int, int], None]  # (texts done, texts in all)
BATCH_SIZE = 32


def dimension(model) -> int:
    """The embedding size of a sentence-transformers model (384 for all-MiniLM-L6-v2)."""
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


def max_tokens(model) -> int:
    """How many word pieces the model reads; a longer chunk is cut there before it is embedded."""
    return int(getattr(model, "max_seq_length", 0) or 512)


def embed(model, texts: Sequence[str], batch_size: int = BATCH_SIZE, progress: EmbedProgress | None = None) -> np.ndarray:
    """Embed `texts` in batches; (N, D) float32, row i for texts[i]; progress(done, total) after each batch."""
    if batch_size < 1:
        raise InputError(f"batch_size is {batch_size}; it must be at least 1.")
    n = len(texts)
    dim = dimension(model)
    out = np.zeros((n, dim), dtype=np.float32)  # (N, D)
    if n == 0:
        return out
    order = np.argsort([-len(t) for t in texts], kind="stable")  # longest first, like encode()
    done = 0
    for lo in range(0, n, batch_size):
        idx = order[lo: lo + batch_size]
        vecs = model.encode([texts[i] for i in idx], batch_size=batch_size, convert_to_numpy=True,
                            show_progress_bar=False)  # (b, D)
        out[idx] = vecs
        done += len(idx)
        if progress:
            progress(done, n)
    return out


def embed_query(model, text: str) -> np.ndarray:
    """One query vector (D,)."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("The question is empty: type a question to retrieve chunks for.")
    return model.encode([text], convert_to_numpy=True, show_progress_bar=False)[0].astype(np.float32)  # (D,)


def as_llama_index(model, name: str = "sentence-transformers", progress: EmbedProgress | None = None):
    """Our sentence-transformers model as a LlamaIndex `BaseEmbedding` (local, no network)."""
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import PrivateAttr

    class SentenceTransformerEmbedding(BaseEmbedding):
        _model: Any = PrivateAttr()

        def __init__(self, st_model, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._model = st_model

        @classmethod
        def class_name(cls) -> str:
            return "PlaygroundSentenceTransformerEmbedding"

        def _get_query_embedding(self, query: str) -> list[float]:
            return embed(self._model, [query])[0].tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return embed(self._model, [text])[0].tolist()

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return embed(self._model, texts, progress=progress).tolist()

    return SentenceTransformerEmbedding(model, model_name=name, embed_batch_size=256)
