"""Finding the chunks for a question: dense, sparse, hybrid; top-k, threshold, source filter, neighbours.

- dense: the question's embedding against the chunks' (``using="dense"``).
- sparse: BM25-style. A chunk's sparse vector holds, per term, the saturated term frequency
  ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len))``; the question's holds 1 per
  distinct term. Qdrant's ``Modifier.IDF`` multiplies each term by its inverse document
  frequency over the collection at query time, so the dot product is the BM25 score. Terms are
  lower-cased words and identifiers kept whole (``__init__``, ``AssertionError``, ``3.14``).
- hybrid: both as prefetches of one Query API call, fused with reciprocal rank fusion by Qdrant
  (``FusionQuery(fusion=Fusion.RRF)`` on a server, ``Fusion.Rrf(k=2)`` on the embedded Edge store:
  the same fusion): score = sum over methods of 1 / (rank + 2), rank counted from 0.

Every hit also carries its rank under each of the three methods (within the top `depth`), so
the page can show why it was found. With `neighbours` = n, each hit is widened with the n
chunks before and after it in its source (their text merged by offsets, no repeated text).

What it leaves out: the prompt and the answer (playground.rag.pipeline).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from playground.errors import InputError
from playground.options import option, validate
from playground.rag import store
from playground.rag.chunking import Chunk
from playground.rag.embedding import embed_query

METHODS = {"dense": "Dense (embeddings)", "sparse": "Sparse (BM25 terms)", "hybrid": "Hybrid (RRF of both)"}
K1, B = 1.2, 0.75
DEFAULT_AVG_LEN = 80.0  # terms per chunk assumed until a collection records its own average
DEPTH = 50  # ranks under each method are looked up within its top DEPTH
_TERM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?")


# --- the sparse encoding ----------------------------------------------------------------------

def terms(text: str) -> list[str]:
    """Lower-cased words and identifiers, in order (``"x.__init__()"`` -> ``["x", "__init__"]``)."""
    return [t.lower() for t in _TERM.findall(text)]


def term_id(term: str) -> int:
    """A stable 31-bit index for a term (no vocabulary to keep in sync)."""
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "big") & 0x7FFFFFFF


def sparse_document(text: str, avg_len: float = DEFAULT_AVG_LEN, k1: float = K1, b: float = B):
    """The BM25 term-frequency part of a chunk: {term: tf*(k1+1)/(tf + k1*(1-b+b*len/avg_len))}."""
    from qdrant_client import models

    words = terms(text)
    tf = Counter(words)
    norm = k1 * (1 - b + b * len(words) / max(avg_len, 1e-6))
    weights: dict[int, float] = {}
    for t, n in tf.items():
        weights[term_id(t)] = weights.get(term_id(t), 0.0) + n * (k1 + 1) / (n + norm)
    idx = sorted(weights)
    return models.SparseVector(indices=idx, values=[weights[i] for i in idx])


def sparse_query(text: str):
    """1 per distinct term: the IDF modifier turns the dot product into BM25."""
    from qdrant_client import models

    idx = sorted({term_id(t) for t in terms(text)})
    return models.SparseVector(indices=idx, values=[1.0] * len(idx))


def average_terms(texts: Sequence[str]) -> float:
    return float(np.mean([len(terms(t)) for t in texts])) if texts else DEFAULT_AVG_LEN


# --- settings and results ------------------------------------------------------------------

@dataclass(frozen=True)
class RetrievalSettings:
    """How to retrieve. A threshold of 0 means none (for hybrid, scores are RRF scores: at most 1)."""

    method: str = "dense"
    top_k: int = option(5, 1, 50, "how many chunks to retrieve", 1)
    score_threshold: float = option(0.0, 0.0, 100.0, "drop hits scoring below this (0 = keep all)", 0.01)
    neighbours: int = option(0, 0, 3, "widen each hit with this many chunks before and after it", 1)
    sources: tuple[str, ...] = ()

    def check(self) -> RetrievalSettings:
        if self.method not in METHODS:
            raise InputError(f"Unknown retrieval method {self.method!r}; use one of {', '.join(METHODS)}.")
        return validate(self)

    @property
    def label(self) -> str:
        extra = f", ±{self.neighbours} neighbours" if self.neighbours else ""
        thr = f", score ≥ {self.score_threshold:g}" if self.score_threshold else ""
        return f"{self.method} top-{self.top_k}{thr}{extra}"


@dataclass(frozen=True)
class RetrievedChunk:
    """One hit: the chunk, its score and rank under the chosen method, its rank under each method,
    and the neighbouring chunks added around it (their merged text is `text`)."""

    id: str
    chunk: Chunk
    score: float
    rank: int  # 1-based, under the method that retrieved it
    ranks: dict[str, int | None] = field(default_factory=dict)  # method -> rank within DEPTH, or None
    neighbours: tuple[Chunk, ...] = ()

    @property
    def source(self) -> str:
        return self.chunk.source

    @property
    def span(self) -> tuple[int, int]:
        """(start, end) in the source, neighbours included."""
        cs = (self.chunk, *self.neighbours)
        return min(c.start for c in cs), max(c.end for c in cs)

    @property
    def text(self) -> str:
        """The chunk's text, widened with its neighbours (merged by offsets: overlaps are not repeated)."""
        if not self.neighbours:
            return self.chunk.text
        return merge_text((self.chunk, *self.neighbours))


@dataclass(frozen=True)
class Retrieval:
    """What a question retrieved from one collection."""

    question: str
    collection: str
    settings: RetrievalSettings
    hits: tuple[RetrievedChunk, ...]
    query_terms: tuple[str, ...]
    query_vector: np.ndarray  # (D,)
    seconds: float
    depth: int = DEPTH

    @property
    def sources(self) -> list[str]:
        return [h.source for h in self.hits]


def merge_text(chunks: Sequence[Chunk]) -> str:
    """The text of chunks of ONE source laid at their offsets; gaps (stripped whitespace) become one space."""
    cs = sorted(chunks, key=lambda c: c.start)
    out: list[str] = []
    cursor = cs[0].start
    for c in cs:
        if c.end <= cursor:
            continue
        if c.start > cursor:
            out.append("\n" if c.start - cursor > 1 else " ")
            cursor = c.start
        out.append(c.text[cursor - c.start:])
        cursor = c.end
    return "".join(out)


# --- queries ------------------------------------------------------------------------------

def _search(client, collection: str, method: str, dense: np.ndarray, sparse, limit: int,
            threshold: float | None, sources: Sequence[str]) -> list:
    """One query under `method`; the scored points (.id, .score, .payload), best first."""
    from qdrant_client import models

    if method == "sparse" and not sparse.indices:
        return []  # no words in the question: nothing to match
    deep = max(20, 4 * limit)
    if store.is_edge(client):
        return client.query(collection, method, dense, sparse, limit, threshold, list(sources), deep)
    flt = store.source_filter(sources)
    if method == "dense":
        res = client.query_points(collection, query=dense.tolist(), using=store.DENSE, limit=limit,
                                  query_filter=flt, score_threshold=threshold, with_payload=True)
    elif method == "sparse":
        res = client.query_points(collection, query=sparse, using=store.SPARSE, limit=limit,
                                  query_filter=flt, score_threshold=threshold, with_payload=True)
    else:
        prefetch = [models.Prefetch(query=dense.tolist(), using=store.DENSE, limit=deep, filter=flt)]
        if sparse.indices:
            prefetch.append(models.Prefetch(query=sparse, using=store.SPARSE, limit=deep, filter=flt))
        res = client.query_points(collection, prefetch=prefetch, query=models.FusionQuery(fusion=models.Fusion.RRF),
                                  limit=limit, query_filter=flt, score_threshold=threshold, with_payload=True)
    return list(res.points)


@store.guard("search the collection")
def search(client, collection: str, method: str, dense: np.ndarray, sparse, limit: int,
           threshold: float | None = None, sources: Sequence[str] = ()) -> list:
    """The raw query (used by the benchmark too): scored points under `method`."""
    return _search(client, collection, method, dense, sparse, limit, threshold, list(sources))


@store.guard("fetch neighbouring chunks")
def _neighbours(client, collection: str, chunk: Chunk, n: int) -> tuple[Chunk, ...]:
    near = store.scroll(client, collection, sources=[chunk.source], position_range=(chunk.position - n, chunk.position + n))
    return tuple(sorted((c for _, c, _ in near if c.position != chunk.position), key=lambda c: c.position))


def retrieve(client, collection: str, embedder, question: str, settings: RetrievalSettings | None = None,
             depth: int = DEPTH, query_vector: np.ndarray | None = None, with_ranks: bool = True) -> Retrieval:
    """Retrieve chunks for `question` from `collection`, with every hit's rank under each method.

    `query_vector` (D,) skips embedding the question (an evaluation embeds all its questions in one
    batch); `with_ranks=False` skips the three extra queries that rank the hits under each method.
    """
    s = (settings or RetrievalSettings()).check()
    if not isinstance(question, str) or not question.strip():
        raise InputError("The question is empty: type a question to retrieve chunks for.")
    if not store.exists(client, collection):
        raise InputError(f"There is no collection {collection!r} yet: index the documents first.")
    start = time.perf_counter()
    qvec = embed_query(embedder, question) if query_vector is None else np.asarray(query_vector, dtype=np.float32)  # (D,)
    svec = sparse_query(question)
    threshold = s.score_threshold or None
    main = search(client, collection, s.method, qvec, svec, s.top_k, threshold, s.sources)
    ranks: dict[str, dict[str, int]] = {}
    for m in METHODS if with_ranks else ():
        pts = search(client, collection, m, qvec, svec, max(depth, s.top_k), None, s.sources)
        ranks[m] = {str(p.id): i + 1 for i, p in enumerate(pts)}
    hits: list[RetrievedChunk] = []
    for i, p in enumerate(main):
        pid = str(p.id)
        chunk = store.chunk_of(p.payload)
        hits.append(RetrievedChunk(pid, chunk, float(p.score), i + 1, {m: r.get(pid) for m, r in ranks.items()}))
    if s.neighbours:
        hits = widen(client, collection, hits, s.neighbours)
    return Retrieval(question, collection, s, tuple(hits), tuple(dict.fromkeys(terms(question))), qvec,
                     time.perf_counter() - start, depth)


def widen(client, collection: str, hits: Sequence[RetrievedChunk], n: int) -> list[RetrievedChunk]:
    """Each hit with up to n chunks before and after it; a chunk already shown by a better hit is not repeated."""
    from dataclasses import replace

    shown: set[tuple[str, int]] = {(h.chunk.source, h.chunk.position) for h in hits}
    out: list[RetrievedChunk] = []
    for h in hits:
        near = [c for c in _neighbours(client, collection, h.chunk, n) if (c.source, c.position) not in shown]
        # keep only neighbours contiguous with the hit (a gap would splice unrelated text)
        keep: list[Chunk] = []
        for direction in (-1, 1):
            pos = h.chunk.position + direction
            by_pos = {c.position: c for c in near}
            while pos in by_pos and abs(pos - h.chunk.position) <= n:
                keep.append(by_pos[pos])
                pos += direction
        shown.update((c.source, c.position) for c in keep)
        out.append(replace(h, neighbours=tuple(sorted(keep, key=lambda c: c.position))))
    return out


def highlight_spans(text: str, query_terms: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) of every occurrence of a query term in `text` (whole words, case-insensitive)."""
    wanted = {t.lower() for t in query_terms}
    return [(m.start(), m.end()) for m in _TERM.finditer(text) if m.group(0).lower() in wanted]

