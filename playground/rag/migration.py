"""Moving the previous version's store (qdrant-client local mode under ``$PLAYGROUND_DATA/qdrant``)
into the embedded Qdrant Edge store, once, losing nothing.

`pending()` says whether there is an old folder to migrate. `migrate()` copies every collection
(point ids, dense and sparse vectors, payloads, and the metadata: embedder, chunking, distance,
the BM25 average length) in batches, skipping points the new store already holds, so a run that
was interrupted (a crash, a closed app, a failing callback) simply finishes when run again. Only
when every collection's point count in the new store equals the old one's, and every old id was
found in it, is the old folder renamed aside (``qdrant.migrated-<UTC time>``); it is never deleted.
A collection whose vectors do not match (another size or distance) under the same name in the new
store is reported, and the old folder kept.

Saved setups (playground.rag.setups) name their collection by its spec, and the names are carried
over as they are, so they find their collections in the new store.

What it leaves out: a Qdrant server (nothing to migrate: it keeps its own data), and copying from
the new store back to the old one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from playground.errors import StoreError
from playground.rag import store

BATCH = 512
MigrationProgress = Callable[[int, int, str], None]  # (points copied so far, points in all, message)


@dataclass(frozen=True)
class CollectionMigration:
    name: str
    points: int  # in the old store
    copied: int  # written by this run (the rest were there from an earlier run)
    counted: int  # in the new store afterwards


@dataclass(frozen=True)
class MigrationReport:
    source: str  # the old folder
    moved_to: str  # where the old folder was renamed, or "" if it was kept
    collections: tuple[CollectionMigration, ...]
    seconds: float

    @property
    def complete(self) -> bool:
        return bool(self.moved_to)

    @property
    def points(self) -> int:
        return sum(c.points for c in self.collections)


def pending(old: str | Path | None = None) -> bool:
    """True if an old local-mode folder with collections is waiting to be migrated."""
    folder = Path(old) if old else store.legacy_path()
    return (folder / "collection").is_dir() and any((folder / "collection").iterdir())


def _quiet(done: int, total: int, message: str) -> None:
    pass


def migrate(target, old: str | Path | None = None, progress: MigrationProgress | None = None) -> MigrationReport:
    """Copy every collection of the local-mode folder `old` (default store.legacy_path()) into the
    Edge store `target`, then rename `old` aside. Safe to run again after an interruption."""
    report = progress or _quiet
    start = time.perf_counter()
    folder = Path(old) if old else store.legacy_path()
    if not store.is_edge(target):
        raise StoreError("The migration writes into the embedded Qdrant Edge store; open it with store.connect() first.")
    if not pending(folder):
        return MigrationReport(str(folder), "", (), time.perf_counter() - start)
    source = store.connect(path=folder, engine="local")
    try:
        infos = store.list_collections(source)
        total = sum(i.points for i in infos)
        done = 0
        results: list[CollectionMigration] = []
        for ci in infos:
            report(done, total, f"{ci.name}: {ci.points:,} points")
            created = store.ensure_collection(target, ci.name, ci.dim, ci.distance, ci.meta or None)
            if not created:
                store.set_meta(target, ci.name, {**store.info(target, ci.name).meta, **ci.meta})
            else:
                store.set_meta(target, ci.name, ci.meta)
            copied, old_ids = _copy(source, target, ci.name, lambda n, _d=done: report(_d + n, total, f"{ci.name}: copied"))
            done += ci.points
            counted = store.count(target, ci.name)
            missing = len(old_ids - target.existing_ids(ci.name, sorted(old_ids)))
            if missing:
                raise StoreError(f"After copying {ci.name!r}, {missing:,} of its {len(old_ids):,} points are not in the "
                                 f"new store; the old folder {folder} is kept. Run the migration again.")
            results.append(CollectionMigration(ci.name, ci.points, copied, counted))
            report(done, total, f"{ci.name}: {counted:,} points in the new store")
    finally:
        store.close(source)
    short = [r for r in results if r.counted < r.points]
    if short:
        raise StoreError("The new store holds fewer points than the old one for "
                         + ", ".join(f"{r.name!r} ({r.counted:,} of {r.points:,})" for r in short)
                         + f"; the old folder {folder} is kept. Run the migration again.")
    target.flush()
    aside = folder.with_name(f"{folder.name}.migrated-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    folder.rename(aside)
    report(total, total, f"migrated {total:,} points in {len(results)} collection(s); the old folder is now {aside}")
    return MigrationReport(str(folder), str(aside), tuple(results), time.perf_counter() - start)


def _copy(source, target, name: str, progress: Callable[[int], None]) -> tuple[int, set[str]]:
    """Copy the points of `name` that `target` lacks, in batches; (points written, every old id)."""
    copied = 0
    seen = 0
    ids_all: set[str] = set()
    offset = None
    while True:
        points, offset = source.scroll(name, limit=BATCH, offset=offset, with_payload=True,
                                       with_vectors=[store.DENSE, store.SPARSE])
        ids = [str(p.id) for p in points]
        ids_all.update(ids)
        have = target.existing_ids(name, ids) if ids else set()
        new = [p for p in points if str(p.id) not in have]
        if new:
            dense = np.asarray([p.vector[store.DENSE] for p in new], dtype=np.float32)  # (B, D)
            sparse = [p.vector.get(store.SPARSE) or _empty() for p in new]
            target.upsert(name, [str(p.id) for p in new], dense, sparse, [dict(p.payload or {}) for p in new])
            copied += len(new)
        seen += len(points)
        progress(seen)
        if offset is None or not points:
            return copied, ids_all


def _empty():
    from qdrant_client import models

    return models.SparseVector(indices=[], values=[])
