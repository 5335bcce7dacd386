"""Indexing document sets of real size: many files, or one .zip of them, with progress, a stop
button, resuming, and one bad file not spoiling the rest.

`ingest(client, files, spec, ...)` takes a list of (name, bytes) or the bytes of a .zip. Each file
is read with playground.rag.documents (the same checks as one upload), cut with the spec's
chunking, and its new chunks embedded and written in batches of `batch` chunks (consecutive small
files share a batch). `ingest_chunks(client, [(source, chunks), ...], spec, embedder)` does the same
for chunks already cut (the RAG page cuts them first, to show them). Between batches, and every 32
chunks embedded, the `stop` event is looked at: a stopped run keeps what it wrote, and because chunk ids are
content hashes, running it again embeds only what is missing. A file that cannot be read or
indexed is reported (`FileResult.error`) and the others go on.

A source name that already holds other text (chunks the new cut does not produce: another file
under the same name, or an edited one) is refused with status ``"exists"`` unless `replace=True`:
then the old chunks are removed once the new ones are all written.

Progress: `on_file(FileProgress)` after every batch of a file, `on_overall(fraction, message)` as
files go by. After the run the store is asked to build its HNSW index without blocking
(store.build_index).

What it leaves out: reading formats other than documents.py's, and OCR.
"""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from playground.errors import InputError, PlaygroundError, describe
from playground.rag import documents, store
from playground.rag.chunking import Chunk, split
from playground.rag.embedding import dimension, embed
from playground.rag.retrieval import average_terms, sparse_document

MAX_FILES = 10_000
MAX_ZIP_BYTES = 2 * 1024 * 1024 * 1024  # 2 GB uncompressed in all
BATCH = 256  # chunks per embedding call: large enough to embed at bare encode speed

FileInput = tuple[str, bytes]


@dataclass(frozen=True)
class FileProgress:
    """Where one file stands: its index among the files, chunks written of its chunks."""

    name: str
    index: int  # 0-based
    files: int
    done: int  # chunks of this file now in the store
    chunks: int  # chunks the file was cut into (0 until it is cut)
    status: str  # "reading" | "embedding" | "done" | "failed" | "exists" | "stopped"
    message: str = ""


@dataclass(frozen=True)
class FileResult:
    name: str
    status: str  # "indexed" | "unchanged" | "failed" | "exists" | "stopped"
    chunks: int = 0
    added: int = 0  # embedded and written by this run
    removed: int = 0  # old chunks of the source replaced
    error: str = ""


@dataclass(frozen=True)
class IngestReport:
    collection: str
    files: tuple[FileResult, ...]
    stopped: bool
    points: int  # in the collection afterwards
    seconds: float
    embed_seconds: float

    def of(self, status: str) -> list[FileResult]:
        return [f for f in self.files if f.status == status]

    @property
    def failed(self) -> list[FileResult]:
        return self.of("failed")

    @property
    def added(self) -> int:
        return sum(f.added for f in self.files)


def files_from_zip(data: bytes, name: str = "upload.zip") -> list[FileInput]:
    """(name, bytes) of every file in a .zip, folders kept in the name (``docs/a.md``); the
    operating system's extras (``__MACOSX/``, ``.DS_Store``, dot files) are skipped."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise InputError(f"{name} is not a readable .zip file ({exc}).") from exc
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        infos = [i for i in infos if not (i.filename.startswith("__MACOSX/")
                                          or any(part.startswith(".") for part in PurePosixPath(i.filename).parts))]
        if not infos:
            raise InputError(f"{name} holds no files.")
        if len(infos) > MAX_FILES:
            raise InputError(f"{name} holds {len(infos):,} files; at most {MAX_FILES:,} at once. Split it.")
        size = sum(i.file_size for i in infos)
        if size > MAX_ZIP_BYTES:
            raise InputError(f"{name} unpacks to {size / 1024 ** 3:.1f} GB; the limit is {MAX_ZIP_BYTES / 1024 ** 3:.0f} GB.")
        out = []
        for i in infos:
            if i.flag_bits & 0x1:
                raise InputError(f"{name}: {i.filename} is encrypted; zip it again without a password.")
            out.append((i.filename, zf.read(i)))
        return out


def _quiet(*_args) -> None:
    pass


def _check_names(names: Sequence[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"Two files are named {dupes[0]!r}" + (f" (and {len(dupes) - 1} more names)" if len(dupes) > 1 else "")
                         + ": a source name must be unique in a collection. Rename one.")


def ingest(client, files: Sequence[FileInput] | bytes, spec, embedder, tokenizer, *, replace: bool = False,
           stop: threading.Event | None = None, on_file: Callable[[FileProgress], None] | None = None,
           on_overall: Callable[[float, str], None] | None = None, batch: int = BATCH,
           build_index: bool = True) -> IngestReport:
    """Index many files (or a .zip of them) into the collection of `spec` (a pipeline.IndexSpec).

    Each file is read and cut when its turn comes, so a file that fails to read fails alone."""
    if isinstance(files, (bytes, bytearray)):
        files = files_from_zip(bytes(files))
    files = list(files)
    if not files:
        raise InputError("No files were given: pick some files or a .zip of them.")
    _check_names([n for n, _ in files])

    def cut(i: int) -> list[Chunk]:
        fname, data = files[i]
        doc = documents.load_bytes(fname, data)
        if doc.source != fname:  # load_bytes keeps the base name only; keep the folder from a .zip
            doc = documents.Document(fname, doc.text, doc.kind, doc.pages)
        return split([doc], spec.chunking, tokenizer, embedder)

    return _run(client, [n for n, _ in files], cut, spec, embedder, None, replace, stop, on_file, on_overall,
                batch, build_index)


def ingest_chunks(client, groups: Sequence[tuple[str, Sequence[Chunk]]], spec, embedder, *, replace: bool = False,
                  stop: threading.Event | None = None, on_file: Callable[[FileProgress], None] | None = None,
                  on_overall: Callable[[float, str], None] | None = None, batch: int = BATCH,
                  build_index: bool = True) -> IngestReport:
    """Index chunks already cut, one (source, chunks) group per file, with the same progress, stop,
    resume and per-file report as `ingest` (the RAG page cuts documents itself to show them first).

    The collection's BM25 average length, when it has none yet, is taken over all the chunks given,
    as pipeline.index does, so either path writes the same sparse vectors."""
    groups = [(name, list(chunks)) for name, chunks in groups]
    if not groups:
        raise InputError("No documents were given: there is nothing to index.")
    _check_names([n for n, _ in groups])
    texts = [c.text for _, chunks in groups for c in chunks]
    return _run(client, [n for n, _ in groups], lambda i: groups[i][1], spec, embedder,
                average_terms(texts) if texts else None, replace, stop, on_file, on_overall, batch, build_index)


@dataclass
class _File:
    """One file while the run goes: its cut, what was already stored, what is still to be written."""

    name: str
    chunks: int
    done: int  # chunks of this file in the store
    other: set[str]  # stored chunks of this source the new cut does not produce (removed once it is all written)
    waiting: int  # of its new chunks, how many are not written yet


def _run(client, names: list[str], cut: Callable[[int], list[Chunk]], spec, embedder, avg_len_all: float | None,
         replace: bool, stop: threading.Event | None, on_file, on_overall, batch: int, build_index: bool) -> IngestReport:
    """The one loop behind ingest and ingest_chunks.

    New chunks of consecutive files share embedding batches of `batch` chunks (a folder of small files
    embeds at the speed of one big call); a file is done when its last chunk is written. Between
    batches, and after every 32 chunks embedded, the `stop` event is looked at and progress is told.
    """
    start = time.perf_counter()
    file_cb = on_file or _quiet
    overall = on_overall or _quiet
    stop = stop or threading.Event()
    if batch < 1:
        raise InputError(f"batch is {batch}; it must be at least 1.")
    spec.check()
    name = spec.collection
    store.ensure_collection(client, name, dimension(embedder), spec.distance, spec.meta())
    n = len(names)
    results: dict[int, FileResult] = {}
    state: dict[int, _File] = {}
    pending: list[tuple[int, Chunk]] = []  # new chunks waiting for an embedding batch, in file order
    clock = {"embed": 0.0}
    avg = {"len": store.info(client, name).meta.get("bm25_avg_len")}

    def tell(i: int, status: str, message: str = "") -> None:
        f = state.get(i)
        file_cb(FileProgress(names[i], i, n, f.done if f else 0, f.chunks if f else 0, status, message))

    def finish(i: int) -> None:
        f = state[i]
        removed = store.delete_points(client, name, sorted(f.other)) if f.other else 0
        new = results_new[i]
        results[i] = FileResult(names[i], "indexed" if new or removed else "unchanged", f.chunks, new, removed)
        tell(i, "done")

    results_new: dict[int, int] = {}

    def flush(k: int) -> bool:
        """Embed and write the first `k` pending chunks; False if stopped before writing them."""
        part = pending[:k]
        files_in = sorted({i for i, _ in part})

        def progress(done: int, total: int) -> None:
            for i in files_in:
                tell(i, "embedding")
            if stop.is_set():
                raise _Stopped

        t0 = time.perf_counter()
        chunks = [c for _, c in part]
        try:
            vectors = embed(embedder, [c.text for c in chunks], progress=progress)  # (k, D)
            clock["embed"] += time.perf_counter() - t0
            store.upsert(client, name, chunks, vectors, [sparse_document(c.text, avg["len"]) for c in chunks])
        except _Stopped:
            return False
        except Exception as exc:  # noqa: BLE001 - the files of this batch fail; the others go on
            error = str(exc) if isinstance(exc, PlaygroundError) else describe(exc)
            for i in files_in:
                _fail(i, error, results, state, pending, tell, names)
            return True
        del pending[:k]
        for i, _ in part:
            state[i].done += 1
            state[i].waiting -= 1
        for i in files_in:
            if state[i].waiting == 0 and i not in results:
                finish(i)
            else:
                tell(i, "embedding")
        return True

    stopped = False
    for i in range(n):
        if stop.is_set():
            stopped = True
            break
        overall(i / n, f"file {i + 1:,} of {n:,}: {names[i]}")
        tell(i, "reading")
        try:
            chunks = cut(i)
            if not chunks:
                raise InputError(f"{names[i]} gave no chunks: there is nothing to index.")
            ids = [c.id for c in chunks]
            stored = {pid for pid, _, _ in store.scroll(client, name, sources=[names[i]])}
            other = stored - set(ids)
            if other and not replace:
                results[i] = FileResult(names[i], "exists", len(chunks), error=(
                    f"{names[i]} is already in {name!r} with other text ({len(stored):,} chunks, {len(other):,} of them "
                    "not in this file): pass replace=True to replace it, or rename the file."))
                tell(i, "exists", results[i].error)
                continue
            if avg["len"] is None:  # fixed once per collection (as pipeline.index does)
                avg["len"] = avg_len_all if avg_len_all is not None else average_terms([c.text for c in chunks])
                store.set_meta(client, name, {**spec.meta(), **store.info(client, name).meta, "bm25_avg_len": avg["len"]})
            new = [c for c in chunks if c.id not in stored]
            state[i] = _File(names[i], len(chunks), len(chunks) - len(new), other, len(new))
            results_new[i] = len(new)
            tell(i, "embedding")
            pending.extend((i, c) for c in new)
            if not new:
                finish(i)
            while len(pending) >= batch:
                if stop.is_set() or not flush(batch):
                    stopped = True
                    break
        except PlaygroundError as exc:  # reading or cutting this file
            _fail(i, str(exc), results, state, pending, tell, names)
        except Exception as exc:  # noqa: BLE001 - one file's failure (a parser bug, a bad PDF) must not stop the rest
            _fail(i, describe(exc), results, state, pending, tell, names)
        if stopped:
            break
    if not stopped and pending:
        stopped = stop.is_set() or not flush(len(pending))
    for i in range(n):  # what a stop left: written in part, or not reached
        if i not in results:
            f = state.get(i)
            results[i] = FileResult(names[i], "stopped", f.chunks if f else 0, (f.done - (f.chunks - results_new[i])) if f else 0)
            if f:
                tell(i, "stopped")
    ordered = tuple(results[i] for i in range(n))
    points = store.count(client, name)
    ok = sum(r.status in ("indexed", "unchanged") for r in ordered)
    failed = sum(r.status == "failed" for r in ordered)
    overall(1.0 if not stopped else ok / n,
            f"{ok:,} of {n:,} files indexed" + (f", {failed} failed" if failed else "") + ("; stopped" if stopped else "")
            + f"; {points:,} points")
    if build_index and not stopped:
        store.build_index(client, name)
    return IngestReport(name, ordered, stopped, points, time.perf_counter() - start, clock["embed"])


class _Stopped(Exception):
    """The stop event was seen while a batch was being embedded."""


def _fail(i, error, results, state, pending, tell, names) -> None:
    """File `i` failed: its chunks still waiting are dropped; what it wrote stays (content-hashed)."""
    pending[:] = [(j, c) for j, c in pending if j != i]
    results[i] = FileResult(names[i], "failed", error=error)
    tell(i, "failed", error)
