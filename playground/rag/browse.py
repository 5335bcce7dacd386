"""The collection browser, core side: what each collection holds, the chunks of a source, deleting.

`summaries(client)` gives per collection its sources with chunk counts, the embedder, chunking and
distance it was made with, its size on disk (embedded store only) and its index state;
`source_chunks` the chunks of one source in order with their payloads; `delete_source` and
`delete_collection` remove them (the page asks for a confirmation first: they cannot be undone).

What it leaves out: rendering (components/collections.py; this module is not named collections, which would read as the standard library) and editing chunks in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from playground.errors import InputError
from playground.rag import store
from playground.rag.chunking import Chunk


@dataclass(frozen=True)
class SourceSummary:
    source: str
    chunks: int


@dataclass(frozen=True)
class CollectionSummary:
    name: str
    points: int
    dim: int
    distance: str
    embedder: str  # "" when the collection does not record it
    chunking: str  # e.g. "recursive 500/50", "" when not recorded
    sources: tuple[SourceSummary, ...]
    bytes_on_disk: int | None  # None on a server
    index: Any = None  # edge.IndexState on the embedded store, None on a server
    meta: dict[str, Any] | None = None

    @property
    def size_label(self) -> str:
        if self.bytes_on_disk is None:
            return "on the server"
        b = float(self.bytes_on_disk)
        for unit in ("B", "KB", "MB", "GB"):
            if b < 1024 or unit == "GB":
                return f"{b:,.0f} {unit}" if unit == "B" else f"{b:,.1f} {unit}"
            b /= 1024
        return ""


@dataclass(frozen=True)
class StoredChunk:
    """One point of a source: its id, the chunk, and the whole payload as stored."""

    id: str
    chunk: Chunk
    payload: dict[str, Any]


def _chunking_label(c: Any) -> str:
    if not isinstance(c, dict):
        return ""
    method = c.get("method", "")
    if method == "semantic":
        return f"semantic p{c.get('breakpoint_percentile', '?')} ≤{c.get('size', '?')}"
    return f"{method} {c.get('size', '?')}/{c.get('overlap', '?')}".strip()


def summary(client, name: str) -> CollectionSummary:
    info = store.info(client, name)
    counts = store.source_counts(client, name)
    return CollectionSummary(
        name, info.points, info.dim, info.distance, str(info.meta.get("embedder", "")),
        _chunking_label(info.meta.get("chunking")),
        tuple(SourceSummary(s, n) for s, n in sorted(counts.items())),
        store.size_on_disk(client, name), store.index_state(client, name), dict(info.meta))


def summaries(client) -> list[CollectionSummary]:
    """Every collection, by name."""
    return [summary(client, c.name) for c in store.list_collections(client)]


def source_chunks(client, name: str, source: str) -> list[StoredChunk]:
    """The chunks of `source` in `name`, by position, with their payloads."""
    if not store.exists(client, name):
        raise InputError(f"There is no collection {name!r}.")
    rows = _payloads(client, name, source)
    if not rows:
        raise InputError(f"Collection {name!r} holds no source {source!r}; its sources are listed by summaries().")
    return sorted(rows, key=lambda r: r.chunk.position)


@store.guard("read the chunks")
def _payloads(client, name: str, source: str) -> list[StoredChunk]:
    if store.is_edge(client):
        return [StoredChunk(pid, store.chunk_of(p), p) for pid, p, _ in client.scroll(name, [source])]
    out: list[StoredChunk] = []
    offset = None
    while True:
        points, offset = client.scroll(name, scroll_filter=store.source_filter([source]), limit=1024, offset=offset,
                                       with_payload=True, with_vectors=False)
        out.extend(StoredChunk(str(p.id), store.chunk_of(p.payload), dict(p.payload)) for p in points)
        if offset is None:
            return out


def delete_source(client, name: str, source: str) -> int:
    """Remove every chunk of `source` from `name`; how many were removed."""
    if not store.exists(client, name):
        raise InputError(f"There is no collection {name!r}.")
    n = store.delete_source(client, name, source)
    if n == 0:
        raise InputError(f"Collection {name!r} holds no source {source!r}: nothing was deleted.")
    return n


def delete_collection(client, name: str) -> None:
    store.delete_collection(client, name)
