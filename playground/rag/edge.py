"""The embedded store: Qdrant's own engine in-process (Qdrant Edge, ``qdrant-edge-py``), one shard per collection.

Everything that touches Edge's young API (pinned in requirements.txt) is in this module;
`playground.rag.store` dispatches to an `EdgeStore` the same calls it makes on a server client.

The folder (``$PLAYGROUND_DATA/edge`` by default) holds one subfolder per collection::

    edge/.lock                      who holds the store: pid, host, command line, since when
    edge/<collection>/collection.json   vector size, distance, metadata (embedder, chunking, BM25 length)
    edge/<collection>/shard/        the Edge shard: segments + write-ahead log
    edge/<collection>/building/     a copy whose HNSW index a child process is building (transient)

A collection holds a named dense vector ``dense`` and a named sparse vector ``sparse`` with the IDF
modifier, keyword / integer payload indexes on ``source`` / ``position`` (Edge facets need them).

The HNSW index. New points land in plain segments, searched exactly (brute force). Building the
graph (`EdgeShard.optimize`) holds the GIL for its whole run in 0.9.0 (20-30 s at 20,000 points:
a thread would freeze every page), so `build_index` copies the flushed shard and optimizes the
copy in a child process; searches keep going, exactly, on the live shard. When the child is done
and nothing was written since the copy, the optimized copy replaces the live shard (a rename); if
something was written, the copy is dropped and the build starts again. `index_state` says where it
stands.

One process at a time: the store takes an exclusive lock (flock) on ``.lock`` and writes who it is
into it; a second process (or a second `EdgeStore` in one process) gets a `StoreError` naming
the holder. Every method holds the store's own lock: calls from several threads are serialised.

What it leaves out: the Qdrant server (qdrant-client, in store.py), snapshots and sync to a
server, quantization, and any vector or payload layout other than the one above.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from playground.errors import StoreError

DENSE = "dense"
SPARSE = "sparse"
FORMAT = 1
INDEX_MIN_POINTS = 5_000  # below this an HNSW graph buys nothing: plain search is already fast
SCROLL_PAGE = 1024
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")


def _q():
    import qdrant_edge

    return qdrant_edge


def _distance(name: str):
    q = _q()
    table = {"cosine": q.Distance.Cosine, "dot": q.Distance.Dot, "euclid": q.Distance.Euclid}
    if name not in table:
        raise StoreError(f"Unknown distance {name!r}; use one of {', '.join(table)}.")
    return table[name]


def _sparse(v):
    """An Edge SparseVector from anything with .indices and .values (qdrant-client's, ours)."""
    return _q().SparseVector([int(i) for i in v.indices], [float(x) for x in v.values])


def _filter(sources: Sequence[str] = (), position_range: tuple[int, int] | None = None):
    q = _q()
    must = []
    if sources:
        must.append(q.FieldCondition(key="source", match=q.MatchAny(list(sources))))
    if position_range is not None:
        must.append(q.FieldCondition(key="position", range=q.RangeFloat(gte=float(position_range[0]),
                                                                         lte=float(position_range[1]))))
    return q.Filter(must=must) if must else None


@dataclass(frozen=True)
class Hit:
    """A scored point, shaped like qdrant-client's (id, score, payload)."""

    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class IndexState:
    """Where a collection's HNSW index stands.

    `indexed`: points in HNSW segments as of the last finished build (points written since are
    searched exactly, by brute force, until the next build). `building`: a child process is
    building it now; searches meanwhile are exact on the live shard.
    """

    collection: str
    points: int
    indexed: int
    hnsw_segments: int
    segments: int
    building: bool
    building_seconds: float = 0.0
    error: str = ""

    @property
    def unindexed(self) -> int:
        return max(self.points - self.indexed, 0)

    @property
    def label(self) -> str:
        if self.building:
            return (f"building the HNSW index ({self.building_seconds:.0f} s so far); "
                    f"searching {self.points:,} points exactly meanwhile")
        if self.error:
            return f"the last index build failed ({self.error}); searching exactly"
        if self.indexed == 0:
            return f"{self.points:,} points, searched exactly (no HNSW index below {INDEX_MIN_POINTS:,} new points)"
        return f"{self.indexed:,} of {self.points:,} points in the HNSW index; the rest searched exactly"


@dataclass
class _Build:
    proc: subprocess.Popen
    copy: Path
    generation: int
    started: float
    points: int


def _holder(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text("utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    pid = info.get("pid")
    since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(info.get("since", 0)))
    who = "this same process (another store object)" if pid == os.getpid() else f"process {pid}"
    return f"{who} on {info.get('host', '?')} ({info.get('command', '?')}, since {since})"


class EdgeStore:
    """Collections in one folder, each an Edge shard. Open one per folder; `close()` frees the folder."""

    kind = "edge"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._shards: dict[str, Any] = {}
        self._gen: dict[str, int] = {}
        self._builds: dict[str, _Build] = {}
        self._errors: dict[str, str] = {}
        self._indexed: dict[str, int] = {}
        self._closed = False
        lock_file = self.root / ".lock"
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(
                f"The Qdrant Edge store at {self.root} is open in {_holder(lock_file)}. Close that app or "
                "notebook (store.close), or set PLAYGROUND_DATA to another folder, or use a Qdrant server URL."
            ) from None
        self._fd = fd
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
              "command": " ".join([Path(sys.executable).name, *sys.argv])[:200]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        for d in self.root.iterdir():
            if d.is_dir():
                self._tidy(d)

    # --- housekeeping ----------------------------------------------------------------------

    @property
    def location(self) -> str:
        return str(self.root)

    def _dir(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.match(name):
            raise StoreError(f"The collection name {name!r} is not usable: use letters, digits, '_', '-' and '.' "
                             "(at most 200), starting with a letter, digit or '_'.")
        return self.root / name

    @staticmethod
    def _tidy(d: Path) -> None:
        """Undo what a process that died mid-build or mid-swap left behind."""
        if (d / "building").exists():
            shutil.rmtree(d / "building", ignore_errors=True)
        if not (d / "shard").exists() and (d / "shard.old").exists():
            (d / "shard.old").rename(d / "shard")
        shutil.rmtree(d / "shard.old", ignore_errors=True)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"The Qdrant Edge store at {self.root} was closed; connect again.")

    def _record(self, name: str) -> dict[str, Any]:
        try:
            return json.loads((self._dir(name) / "collection.json").read_text("utf-8"))
        except FileNotFoundError:
            raise StoreError(f"There is no collection {name!r} in {self.root}.") from None
        except ValueError as exc:
            raise StoreError(f"{self._dir(name) / 'collection.json'} is damaged ({exc}); delete the collection.") from exc

    def _write_record(self, name: str, record: dict[str, Any]) -> None:
        path = self._dir(name) / "collection.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1), "utf-8")
        os.replace(tmp, path)

    def _shard(self, name: str):
        self._check_open()
        self._finish_build(name)
        shard = self._shards.get(name)
        if shard is None:
            if not self.exists(name):
                raise StoreError(f"There is no collection {name!r} in {self.root}.")
            shard = _q().EdgeShard.load(str(self._dir(name) / "shard"))
            self._shards[name] = shard
            self._indexed.setdefault(name, self._record(name).get("indexed", 0))
        return shard

    def _touch(self, name: str) -> None:
        self._gen[name] = self._gen.get(name, 0) + 1

    # --- collections -----------------------------------------------------------------------

    def names(self) -> list[str]:
        with self._lock:
            self._check_open()
            return sorted(d.name for d in self.root.iterdir() if d.is_dir() and (d / "collection.json").is_file())

    def exists(self, name: str) -> bool:
        d = self._dir(name)
        return (d / "collection.json").is_file() and (d / "shard").is_dir()

    def create(self, name: str, dim: int, distance: str, meta: dict[str, Any] | None = None) -> None:
        q = _q()
        with self._lock:
            self._check_open()
            d = self._dir(name)
            if self.exists(name):
                raise StoreError(f"Collection {name!r} already exists in {self.root}.")
            shutil.rmtree(d, ignore_errors=True)  # a half-made one (no collection.json)
            d.mkdir(parents=True)
            config = q.EdgeConfig(
                vectors={DENSE: q.EdgeVectorParams(size=int(dim), distance=_distance(distance))},
                sparse_vectors={SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)},
            )
            shard = q.EdgeShard.create(str(d / "shard"), config)
            shard.update(q.UpdateOperation.create_field_index("source", q.PayloadSchemaType.Keyword))
            shard.update(q.UpdateOperation.create_field_index("position", q.PayloadSchemaType.Integer))
            shard.flush()
            self._shards[name] = shard
            self._indexed[name] = 0
            self._write_record(name, {"format": FORMAT, "dim": int(dim), "distance": distance, "meta": dict(meta or {}),
                                      "created": time.time(), "indexed": 0})

    def config(self, name: str) -> tuple[int, str, dict[str, Any]]:
        """(vector size, distance, metadata) of a collection."""
        with self._lock:
            r = self._record(name)
            return int(r["dim"]), str(r["distance"]), dict(r.get("meta") or {})

    def set_meta(self, name: str, meta: dict[str, Any]) -> None:
        with self._lock:
            r = self._record(name)
            r["meta"] = dict(meta)
            self._write_record(name, r)

    def delete(self, name: str) -> None:
        with self._lock:
            self._check_open()
            self._stop_build(name)
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            d = self._dir(name)
            aside = d.with_name(f".deleting-{name}-{os.getpid()}")
            d.rename(aside)  # gone from the listing at once, even if removing the files is slow
            shutil.rmtree(aside, ignore_errors=True)
            self._gen.pop(name, None)
            self._indexed.pop(name, None)

    def size_on_disk(self, name: str) -> int:
        """Bytes of the collection's files (the shard and its record; not a build in progress)."""
        d = self._dir(name)
        total = 0
        for base in (d / "shard",):
            for p in base.rglob("*"):
                try:
                    if p.is_file():
                        total += p.stat().st_size
                except OSError:
                    continue
        return total + ((d / "collection.json").stat().st_size if (d / "collection.json").exists() else 0)

    # --- points ------------------------------------------------------------------------------

    def count(self, name: str, sources: Sequence[str] = ()) -> int:
        with self._lock:
            return int(self._shard(name).count(_q().CountRequest(exact=True, filter=_filter(sources))))

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        with self._lock:
            shard = self._shard(name)
            found: set[str] = set()
            for lo in range(0, len(ids), 1024):
                for r in shard.retrieve(list(ids[lo: lo + 1024]), with_payload=False, with_vector=False):
                    found.add(str(r.id))
            return found

    def upsert(self, name: str, ids: Sequence[str], dense: np.ndarray, sparse: Sequence, payloads: Sequence[dict]) -> None:
        """Write points: ids[i] with dense[i] (D,), sparse[i] (.indices, .values) and payloads[i]."""
        q = _q()
        with self._lock:
            shard = self._shard(name)
            points = [q.Point(str(pid), {DENSE: np.asarray(dense[i], dtype=np.float32).tolist(), SPARSE: _sparse(sparse[i])},
                              payloads[i]) for i, pid in enumerate(ids)]
            shard.update(q.UpdateOperation.upsert_points(points))
            self._touch(name)

    def delete_ids(self, name: str, ids: Sequence[str]) -> None:
        with self._lock:
            if ids:
                self._shard(name).update(_q().UpdateOperation.delete_points([str(i) for i in ids]))
                self._touch(name)

    def delete_source(self, name: str, source: str) -> int:
        """Delete every point of `source`; how many there were."""
        q = _q()
        with self._lock:
            n = self.count(name, [source])
            if n:
                self._shard(name).update(q.UpdateOperation.delete_points_by_filter(_filter([source])))
                self._touch(name)
            return n

    def scroll(self, name: str, sources: Sequence[str] = (), with_vectors: bool = False,
               position_range: tuple[int, int] | None = None) -> list[tuple[str, dict[str, Any], np.ndarray | None]]:
        """(id, payload, dense vector or None) of every point matching, in id order."""
        q = _q()
        with self._lock:
            shard = self._shard(name)
            flt = _filter(sources, position_range)
            out: list[tuple[str, dict[str, Any], np.ndarray | None]] = []
            offset = None
            while True:
                records, offset = shard.scroll(q.ScrollRequest(offset=offset, limit=SCROLL_PAGE, filter=flt, with_payload=True,
                                                               with_vector=[DENSE] if with_vectors else False))
                for r in records:
                    vec = None
                    if with_vectors and r.vector:
                        vec = np.asarray(r.vector[DENSE], dtype=np.float32)
                    out.append((str(r.id), dict(r.payload or {}), vec))
                if offset is None or not records:
                    return out

    def vectors(self, name: str, ids: Sequence[str]) -> dict[str, tuple[np.ndarray, Any]]:
        """{id: (dense (D,), sparse with .indices/.values)} of some points (the migration checks with it)."""
        with self._lock:
            out = {}
            for r in self._shard(name).retrieve([str(i) for i in ids], with_payload=False, with_vector=True):
                v = r.vector or {}
                out[str(r.id)] = (np.asarray(v.get(DENSE), dtype=np.float32), v.get(SPARSE))
            return out

    def facet(self, name: str, key: str = "source", limit: int = 100_000) -> dict[str, int]:
        with self._lock:
            res = self._shard(name).facet(_q().FacetRequest(key=key, limit=limit, exact=True))
            return {str(h.value): int(h.count) for h in res if h.count > 0}  # exact facets list deleted values with 0

    def query(self, name: str, method: str, dense: np.ndarray, sparse, limit: int, threshold: float | None = None,
              sources: Sequence[str] = (), deep: int = 20, exact: bool = False) -> list[Hit]:
        """Scored points under `method`, best first: ``dense``, ``sparse`` or ``hybrid`` (dense + sparse
        prefetches of `deep` each, fused by Qdrant's RRF with k = 2, the default of Qdrant and local mode)."""
        q = _q()
        flt = _filter(sources)
        params = q.SearchParams(exact=True) if exact else None
        dvec = np.asarray(dense, dtype=np.float32).tolist()
        if method == "dense":
            req = q.QueryRequest(limit=limit, query=q.Query.Nearest(dvec, using=DENSE), filter=flt,
                                 score_threshold=threshold, with_payload=True, params=params)
        elif method == "sparse":
            req = q.QueryRequest(limit=limit, query=q.Query.Nearest(_sparse(sparse), using=SPARSE), filter=flt,
                                 score_threshold=threshold, with_payload=True, params=params)
        elif method == "hybrid":
            prefetch = [q.Prefetch(limit=deep, query=q.Query.Nearest(dvec, using=DENSE), filter=flt, params=params)]
            if len(sparse.indices):
                prefetch.append(q.Prefetch(limit=deep, query=q.Query.Nearest(_sparse(sparse), using=SPARSE), filter=flt,
                                           params=params))
            req = q.QueryRequest(limit=limit, prefetches=prefetch, query=q.Fusion.Rrf(k=2), filter=flt,
                                 score_threshold=threshold, with_payload=True)
        else:
            raise StoreError(f"Unknown search method {method!r}; use dense, sparse or hybrid.")
        with self._lock:
            points = self._shard(name).query(req)
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]

    def flush(self, name: str | None = None) -> None:
        with self._lock:
            for n, shard in list(self._shards.items()):
                if name is None or n == name:
                    shard.flush()

    # --- the HNSW index ------------------------------------------------------------------

    def _segments(self, shard_dir: Path) -> tuple[int, int]:
        """(segments, of which HNSW) from the segments' own config files."""
        total = hnsw = 0
        for f in (shard_dir / "segments").glob("*/segment.json"):
            total += 1
            try:
                vd = json.loads(f.read_text("utf-8"))["config"]["vector_data"][DENSE]
                hnsw += vd["index"]["type"] == "hnsw"
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return total, hnsw

    def index_state(self, name: str) -> IndexState:
        with self._lock:
            points = self.count(name)  # also finishes a build that is done
            segments, hnsw = self._segments(self._dir(name) / "shard")
            b = self._builds.get(name)
            indexed = min(self._indexed.get(name, 0), points) if hnsw else 0
            return IndexState(name, points, indexed, hnsw, segments, b is not None,
                              time.monotonic() - b.started if b else 0.0, self._errors.get(name, ""))

    def build_index(self, name: str, min_points: int = INDEX_MIN_POINTS, wait: bool = False) -> bool:
        """Start building the HNSW index of `name` in a child process if enough points are not in it yet;
        True if a build is running. `wait=True` blocks until it is in place (tests, the benchmark)."""
        with self._lock:
            state = self.index_state(name)
            started = state.building
            if not started and state.unindexed >= min_points:
                self._start_build(name, state.points)
                started = True
        while wait and started:
            time.sleep(0.2)
            with self._lock:
                self._finish_build(name)
                if name not in self._builds:
                    if self._errors.get(name):
                        raise StoreError(f"Building the HNSW index of {name!r} failed: {self._errors[name]}")
                    return True
        return started

    def _start_build(self, name: str, points: int) -> None:
        d = self._dir(name)
        shard = self._shard(name)
        shard.flush()
        copy = d / "building"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(d / "shard", copy)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        proc = subprocess.Popen([sys.executable, "-m", "playground.rag.edge", "optimize", str(copy)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                cwd=str(Path(__file__).resolve().parents[2]))
        self._errors.pop(name, None)
        self._builds[name] = _Build(proc, copy, self._gen.get(name, 0), time.monotonic(), points)

    def _stop_build(self, name: str) -> None:
        b = self._builds.pop(name, None)
        if b is None:
            return
        if b.proc.poll() is None:
            b.proc.terminate()
            try:
                b.proc.wait(10)
            except subprocess.TimeoutExpired:
                b.proc.kill()
                b.proc.wait()
        shutil.rmtree(b.copy, ignore_errors=True)

    def _finish_build(self, name: str) -> None:
        b = self._builds.get(name)
        if b is None or b.proc.poll() is None:
            return
        del self._builds[name]
        err = (b.proc.stderr.read() or b"").decode("utf-8", "replace").strip() if b.proc.stderr else ""
        if b.proc.stderr:
            b.proc.stderr.close()
        if b.proc.returncode != 0:
            self._errors[name] = (err.splitlines() or [f"exit code {b.proc.returncode}"])[-1][:300]
            shutil.rmtree(b.copy, ignore_errors=True)
            return
        if self._gen.get(name, 0) != b.generation:  # written to meanwhile: the copy is stale; build again
            shutil.rmtree(b.copy, ignore_errors=True)
            self._start_build(name, b.points)
            return
        d = self._dir(name)
        shard = self._shards.pop(name, None)
        if shard is not None:
            shard.close()
        (d / "shard").rename(d / "shard.old")
        b.copy.rename(d / "shard")
        shutil.rmtree(d / "shard.old", ignore_errors=True)
        self._shards[name] = _q().EdgeShard.load(str(d / "shard"))
        self._indexed[name] = b.points
        r = self._record(name)
        r["indexed"] = b.points
        self._write_record(name, r)

    # --- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop index builds, close every shard, free the folder for another process. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            for name in list(self._builds):
                self._stop_build(name)
            for shard in self._shards.values():
                try:
                    shard.close()
                except Exception:  # noqa: BLE001 - closing what is already closed
                    pass
            self._shards.clear()
            self._closed = True
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)

    def __del__(self):  # a store dropped without close() still frees its folder
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def _optimize(path: str) -> None:
    """The child process of `build_index`: build the HNSW index of the shard copy at `path`."""
    shard = _q().EdgeShard.load(path)
    shard.optimize()
    shard.flush()
    shard.close()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "optimize":
        _optimize(sys.argv[2])
    else:
        sys.exit("usage: python -m playground.rag.edge optimize SHARD_COPY")
