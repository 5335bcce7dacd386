"""The Qdrant side of the RAG builder: connect, collections, points. Embedded or a server, same calls.

- `connect()` opens the embedded store, Qdrant's own engine in-process (Qdrant Edge, see
  playground.rag.edge), under ``data_root()/edge`` by default, or a server / cluster URL with an
  API key through qdrant-client. A URL that does not answer, or a folder already open in another
  process, raises `StoreError` saying what to do (and which process holds the folder).
  One store object per folder per process: share it (the app caches one).
  ``engine="local"`` opens qdrant-client's pure-Python local mode instead: the previous
  version's store, kept for the migration (playground.rag.migration) and as the reference the
  tests compare Edge with.
- Every function here takes that object (`client`) first and works the same on each: an
  `EdgeStore` is called through its methods, a qdrant-client client through its API.
- A collection holds, per chunk, a named dense vector ``dense`` (cosine, dot or Euclid) and a
  named sparse vector ``sparse`` whose IDF Qdrant computes (``Modifier.IDF``); the payload keeps
  text, source, position, char offsets and token count. Collection metadata records how it was
  built (embedder, chunking, distance), so a mismatch is caught before anything is written.
- Point ids are content hashes (`Chunk.id`): re-ingesting unchanged content writes nothing.
- `build_index` / `index_state`: the embedded store builds its HNSW index in a child process
  while searches stay exact (see playground.rag.edge); a server indexes on its own (None).

What it leaves out: chunking, embedding and the sparse encoding (the caller brings vectors),
and querying (playground.rag.retrieval).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from playground.errors import PlaygroundError, StoreError
from playground.paths import data_root
from playground.rag.chunking import Chunk
from playground.secrets import redact

DENSE = "dense"
SPARSE = "sparse"
DISTANCES = ("cosine", "dot", "euclid")
UPSERT_BATCH = 256


def local_path() -> Path:
    """Where the embedded store lives: ``$PLAYGROUND_DATA/edge``."""
    return data_root() / "edge"


def legacy_path() -> Path:
    """Where the previous version kept its local-mode collections: ``$PLAYGROUND_DATA/qdrant``."""
    return data_root() / "qdrant"


def is_edge(client) -> bool:
    """True for the embedded Qdrant Edge store (playground.rag.edge.EdgeStore)."""
    return getattr(client, "kind", None) == "edge"


def _models():
    from qdrant_client import models

    return models


def _distance(name: str):
    m = _models()
    table = {"cosine": m.Distance.COSINE, "dot": m.Distance.DOT, "euclid": m.Distance.EUCLID}
    if name not in table:
        raise StoreError(f"Unknown distance {name!r}; use one of {', '.join(DISTANCES)}.")
    return table[name]


def _distance_name(d) -> str:
    value = str(getattr(d, "value", d)).lower()
    return {"euclid": "euclid", "cosine": "cosine", "dot": "dot"}.get(value, value)


def _explain(exc: BaseException, where: str) -> str:
    text = redact(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, StoreError):
        return redact(str(exc))
    if "already accessed by another instance" in str(exc):
        return (f"The local Qdrant store at {where} is open in another process (another copy of the app?). "
                "Close it, or use a Qdrant server URL instead.")
    return f"Qdrant at {where} failed: {text[:400]}"


def guard(action: str) -> Callable:
    """Turn any failure of the wrapped store call into a StoreError naming `action`."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(client, *args, **kwargs):
            try:
                return fn(client, *args, **kwargs)
            except PlaygroundError:
                raise
            except Exception as exc:  # noqa: BLE001 - every client/transport error becomes a StoreError
                raise StoreError(f"Could not {action}: {_explain(exc, where(client))}") from exc

        return inner

    return wrap


def where(client) -> str:
    """A readable location of the client: the local folder or the server URL."""
    if is_edge(client):
        return client.location
    inner = getattr(client, "_client", None)
    location = getattr(inner, "location", None)
    if location:
        return str(location)
    rest = getattr(inner, "rest_uri", None)
    return redact(rest or "the Qdrant server")


def is_local(client) -> bool:
    return type(getattr(client, "_client", None)).__name__ == "QdrantLocal"


def connect(url: str | None = None, api_key: str | None = None, path: str | Path | None = None,
            timeout: int = 5, engine: str = "edge"):
    """The store: a QdrantClient for the server at `url` (checked to answer), else the embedded Edge
    store at `path` (default local_path()); ``engine="local"`` gives qdrant-client's local mode at `path`."""
    from qdrant_client import QdrantClient

    if url:
        url = url.strip()
        shown = redact(url, secrets=[api_key])  # what messages say: never the key, nor a password in the URL
        if not url.startswith(("http://", "https://")):
            raise StoreError(f"The Qdrant URL {shown!r} must start with http:// or https:// (e.g. http://localhost:6333).")
        try:
            client = QdrantClient(url=url, api_key=api_key or None, timeout=timeout, check_compatibility=False)
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"Could not set up a client for Qdrant at {shown}: {redact(exc, [api_key])}") from exc
        try:
            client.get_collections()
        except Exception as exc:  # noqa: BLE001
            client.close()
            reason = redact(f"{type(exc).__name__}: {exc}", secrets=[api_key])[:300]
            if "401" in reason or "403" in reason or "Unauthorized" in reason or "Forbidden" in reason:
                raise StoreError(f"Qdrant at {shown} refused the API key ({reason}). Check the key.") from exc
            raise StoreError(
                f"Qdrant at {shown} does not answer ({reason}). Check the URL and that the server is running, "
                "or leave the URL empty to use the local store."
            ) from exc
        return client
    if engine not in ("edge", "local"):
        raise StoreError(f"Unknown embedded engine {engine!r}; use 'edge' or 'local'.")
    if engine == "edge":
        from playground.rag.edge import EdgeStore

        folder = Path(path) if path else local_path()
        try:
            return EdgeStore(folder)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"The Qdrant Edge store at {folder} cannot be opened: {type(exc).__name__}: {exc}"[:500]) from exc
    folder = Path(path) if path else legacy_path()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return QdrantClient(path=str(folder))
    except Exception as exc:  # noqa: BLE001
        raise StoreError(_explain(exc, str(folder))) from exc


# --- collections ------------------------------------------------------------------------

@dataclass(frozen=True)
class CollectionInfo:
    """A collection as the page lists it."""

    name: str
    points: int
    dim: int
    distance: str
    meta: dict[str, Any] = field(default_factory=dict)


@guard("list the collections")
def list_collections(client) -> list[CollectionInfo]:
    if is_edge(client):
        return [info(client, n) for n in client.names()]
    return [info(client, c.name) for c in sorted(client.get_collections().collections, key=lambda c: c.name)]


@guard("read the collection")
def info(client, name: str) -> CollectionInfo:
    if is_edge(client):
        dim, distance, meta = client.config(name)
        return CollectionInfo(name, client.count(name), dim, distance, meta)
    c = client.get_collection(name)
    vectors = c.config.params.vectors
    dense = vectors.get(DENSE) if isinstance(vectors, dict) else vectors
    dim = int(getattr(dense, "size", 0) or 0)
    distance = _distance_name(getattr(dense, "distance", "?"))
    points = int(client.count(name, exact=True).count)
    return CollectionInfo(name, points, dim, distance, dict(getattr(c.config, "metadata", None) or {}))


@guard("check the collection")
def exists(client, name: str) -> bool:
    if is_edge(client):
        return client.exists(name)
    return bool(client.collection_exists(name))


def check_compatible(client, name: str, dim: int, distance: str, meta: dict[str, Any] | None = None) -> None:
    """Raise StoreError if collection `name` holds vectors of another size or distance, or another embedder."""
    have = info(client, name)
    if have.dim != dim:
        made_with = have.meta.get("embedder")
        raise StoreError(
            f"Collection {name!r} holds {have.dim}-dimensional vectors"
            f"{f' (made with {made_with})' if made_with else ''}; the embedder picked makes {dim}-dimensional ones. "
            "Pick the embedder it was made with, or another collection name, or delete it first."
        )
    if have.distance != distance:
        raise StoreError(f"Collection {name!r} was made with {have.distance} distance, not {distance}. Delete it first to change.")
    if meta and have.meta.get("embedder") and have.meta["embedder"] != meta.get("embedder"):
        raise StoreError(
            f"Collection {name!r} was made with the embedder {have.meta['embedder']}, not {meta.get('embedder')}: "
            "their vectors are not comparable. Pick that embedder, or delete the collection first."
        )


@guard("create the collection")
def ensure_collection(client, name: str, dim: int, distance: str, meta: dict[str, Any] | None = None) -> bool:
    """Create `name` (dense + IDF sparse vectors, a keyword index on source) unless it exists; True if created."""
    m = _models()
    if dim < 1:
        raise StoreError(f"The embedding size is {dim}; it must be positive.")
    if distance not in DISTANCES:
        raise StoreError(f"Unknown distance {distance!r}; use one of {', '.join(DISTANCES)}.")
    if exists(client, name):
        check_compatible(client, name, dim, distance, meta)
        return False
    if is_edge(client):
        client.create(name, dim, distance, meta)
        return True
    client.create_collection(
        name,
        vectors_config={DENSE: m.VectorParams(size=dim, distance=_distance(distance))},
        sparse_vectors_config={SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)},
        metadata=meta or None,
    )
    if not is_local(client):  # local mode has no payload indexes (it scans)
        client.create_payload_index(name, "source", field_schema=m.PayloadSchemaType.KEYWORD)
        client.create_payload_index(name, "position", field_schema=m.PayloadSchemaType.INTEGER)
    return True


@guard("update the collection metadata")
def set_meta(client, name: str, meta: dict[str, Any]) -> None:
    if is_edge(client):
        return client.set_meta(name, meta)
    client.update_collection(name, metadata=meta)


@guard("delete the collection")
def delete_collection(client, name: str) -> None:
    if not exists(client, name):
        raise StoreError(f"There is no collection {name!r} to delete.")
    if is_edge(client):
        return client.delete(name)
    client.delete_collection(name)


# --- points ---------------------------------------------------------------------------------

def payload(chunk: Chunk) -> dict[str, Any]:
    return {"text": chunk.text, "source": chunk.source, "position": chunk.position, "start": chunk.start,
            "end": chunk.end, "tokens": chunk.tokens}


def chunk_of(p: dict[str, Any]) -> Chunk:
    return Chunk(p["source"], int(p["position"]), int(p["start"]), int(p["end"]), p["text"], int(p.get("tokens", 0)))


@guard("count the points")
def count(client, name: str) -> int:
    if is_edge(client):
        return client.count(name)
    return int(client.count(name, exact=True).count)


@guard("look up points")
def existing_ids(client, name: str, ids: Sequence[str]) -> set[str]:
    """Which of `ids` the collection already holds."""
    if is_edge(client):
        return client.existing_ids(name, list(ids))
    found: set[str] = set()
    for lo in range(0, len(ids), 1024):
        for p in client.retrieve(name, ids=list(ids[lo: lo + 1024]), with_payload=False, with_vectors=False):
            found.add(str(p.id))
    return found


@guard("write points")
def upsert(client, name: str, chunks: Sequence[Chunk], dense: np.ndarray, sparse: Sequence,
           progress: Callable[[int, int], None] | None = None) -> int:
    """Write chunks with their dense (N, D) and sparse vectors, in batches; returns how many were written."""
    m = _models()
    if len(chunks) != len(dense) or len(chunks) != len(sparse):
        raise StoreError(f"{len(chunks)} chunks but {len(dense)} dense and {len(sparse)} sparse vectors.")
    for lo in range(0, len(chunks), UPSERT_BATCH):
        if is_edge(client):
            part = chunks[lo: lo + UPSERT_BATCH]
            client.upsert(name, [c.id for c in part], dense[lo: lo + len(part)], sparse[lo: lo + len(part)],
                          [payload(c) for c in part])
            if progress:
                progress(min(lo + UPSERT_BATCH, len(chunks)), len(chunks))
            continue
        points = [
            m.PointStruct(id=c.id, vector={DENSE: dense[i].tolist(), SPARSE: sparse[i]}, payload=payload(c))
            for i, c in enumerate(chunks[lo: lo + UPSERT_BATCH], start=lo)
        ]
        client.upsert(name, points=points, wait=True)
        if progress:
            progress(min(lo + UPSERT_BATCH, len(chunks)), len(chunks))
    return len(chunks)


def source_filter(sources: Iterable[str]):
    m = _models()
    wanted = [s for s in sources]
    if not wanted:
        return None
    return m.Filter(must=[m.FieldCondition(key="source", match=m.MatchAny(any=wanted))])


@guard("read points")
def scroll(client, name: str, sources: Iterable[str] = (), with_vectors: bool = False,
           position_range: tuple[int, int] | None = None) -> list[tuple[str, Chunk, np.ndarray | None]]:
    """(id, chunk, dense vector or None) of every point, optionally of some sources / positions."""
    if is_edge(client):
        return [(pid, chunk_of(p), v) for pid, p, v in client.scroll(name, list(sources), with_vectors, position_range)]
    m = _models()
    must = []
    sources = list(sources)
    if sources:
        must.append(m.FieldCondition(key="source", match=m.MatchAny(any=sources)))
    if position_range is not None:
        must.append(m.FieldCondition(key="position", range=m.Range(gte=position_range[0], lte=position_range[1])))
    flt = m.Filter(must=must) if must else None
    out: list[tuple[str, Chunk, np.ndarray | None]] = []
    offset = None
    while True:
        points, offset = client.scroll(name, scroll_filter=flt, limit=1024, offset=offset, with_payload=True,
                                       with_vectors=[DENSE] if with_vectors else False)
        for p in points:
            vec = None
            if with_vectors and p.vector:
                vec = np.asarray(p.vector[DENSE] if isinstance(p.vector, dict) else p.vector, dtype=np.float32)
            out.append((str(p.id), chunk_of(p.payload), vec))
        if offset is None:
            break
    return out


@guard("delete points")
def delete_points(client, name: str, ids: Sequence[str]) -> int:
    if is_edge(client):
        client.delete_ids(name, list(ids))
        return len(ids)
    m = _models()
    if ids:
        client.delete(name, points_selector=m.PointIdsList(points=list(ids)), wait=True)
    return len(ids)


@guard("list the sources")
def source_counts(client, name: str, limit: int = 100_000) -> dict[str, int]:
    """{source: points} of a collection, by Qdrant's facet counts (a keyword index on a server and on Edge)."""
    if is_edge(client):
        return client.facet(name, "source", limit)
    res = client.facet(name, key="source", limit=limit, exact=True)
    return {str(h.value): int(h.count) for h in res.hits}


def sources(client, name: str) -> list[str]:
    """The distinct sources in a collection, sorted."""
    return sorted(source_counts(client, name))


@guard("delete the source")
def delete_source(client, name: str, source: str) -> int:
    """Delete every chunk of `source` from collection `name`; how many there were."""
    if is_edge(client):
        return client.delete_source(name, source)
    m = _models()
    n = int(client.count(name, count_filter=source_filter([source]), exact=True).count)
    if n:
        client.delete(name, points_selector=m.FilterSelector(filter=source_filter([source])), wait=True)
    return n


@guard("read the index state")
def index_state(client, name: str):
    """Where the collection's HNSW index stands (an `edge.IndexState`); None on a server, which indexes on its own."""
    if is_edge(client):
        return client.index_state(name)
    return None


@guard("start building the index")
def build_index(client, name: str, wait: bool = False, min_points: int | None = None) -> bool:
    """Start building the collection's HNSW index without blocking (Edge; a server does it itself),
    if at least `min_points` points (default edge.INDEX_MIN_POINTS) are not in it yet.
    True if a build is running (or, with `wait`, was done)."""
    if is_edge(client):
        from playground.rag.edge import INDEX_MIN_POINTS

        return client.build_index(name, INDEX_MIN_POINTS if min_points is None else min_points, wait=wait)
    return False


@guard("measure the collection")
def size_on_disk(client, name: str) -> int | None:
    """Bytes the collection takes on disk (Edge); None on a server, which does not say."""
    if is_edge(client):
        return client.size_on_disk(name)
    return None


def close(client) -> None:
    """Close a client (releases a local folder's lock)."""
    try:
        client.close()
    except Exception:  # noqa: BLE001 - closing twice, or a server that went away
        pass
