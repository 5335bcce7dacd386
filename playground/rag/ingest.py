"""Indexing document sets of real size: many files, or one .zip of them, with progress, a stop
button, resuming, and one bad file not spoiling the rest.

`ingest(client, files, spec, ...)` takes a list of (name, bytes) or the bytes of a .zip. Each file
is read with playground.rag.documents (the same checks as one upload), cut with the spec's
chunking, and its new chunks embedded and written in batches of `batch` chunks. Between batches
the `stop` event is looked at: a stopped run keeps what it wrote, and because chunk ids are
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
from playground.rag.chunking import split
from playground.rag.embedding import dimension, embed
from playground.rag.retrieval import average_terms, sparse_document

MAX_FILES = 10_000
MAX_ZIP_BYTES = 2 * 1024 * 1024 * 1024  # 2 GB uncompressed in all
BATCH = 128

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


def ingest(client, files: Sequence[FileInput] | bytes, spec, embedder, tokenizer, *, replace: bool = False,
           stop: threading.Event | None = None, on_file: Callable[[FileProgress], None] | None = None,
           on_overall: Callable[[float, str], None] | None = None, batch: int = BATCH,
           build_index: bool = True) -> IngestReport:
    """Index many files (or a .zip of them) into the collection of `spec` (a pipeline.IndexSpec)."""
    start = time.perf_counter()
    file_cb = on_file or _quiet
    overall = on_overall or _quiet
    stop = stop or threading.Event()
    if isinstance(files, (bytes, bytearray)):
        files = files_from_zip(bytes(files))
    files = list(files)
    if not files:
        raise InputError("No files were given: pick some files or a .zip of them.")
    names = [n for n, _ in files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"Two files are named {dupes[0]!r}" + (f" (and {len(dupes) - 1} more names)" if len(dupes) > 1 else "")
                         + ": a source name must be unique in a collection. Rename one.")
    if batch < 1:
        raise InputError(f"batch is {batch}; it must be at least 1.")
    spec.check()
    name = spec.collection
    store.ensure_collection(client, name, dimension(embedder), spec.distance, spec.meta())
    results: list[FileResult] = []
    embed_seconds = 0.0
    stopped = False
    n = len(files)
    for i, (fname, data) in enumerate(files):
        if stop.is_set():
            stopped = True
            results.extend(FileResult(f, "stopped") for f, _ in files[i:])
            break
        overall(i / n, f"file {i + 1:,} of {n:,}: {fname}")
        file_cb(FileProgress(fname, i, n, 0, 0, "reading"))
        try:
            result, secs = _one(client, name, spec, fname, data, embedder, tokenizer, replace, stop, batch,
                                lambda done, total, status, _i=i, _f=fname: file_cb(FileProgress(_f, _i, n, done, total, status)))
        except PlaygroundError as exc:
            result, secs = FileResult(fname, "failed", error=str(exc)), 0.0
        except Exception as exc:  # noqa: BLE001 - one file's failure (a parser bug, a bad PDF) must not stop the rest
            result, secs = FileResult(fname, "failed", error=describe(exc)), 0.0
        embed_seconds += secs
        results.append(result)
        file_cb(FileProgress(fname, i, n, result.chunks if result.status in ("indexed", "unchanged") else result.added,
                             result.chunks, {"indexed": "done", "unchanged": "done"}.get(result.status, result.status),
                             result.error))
        if result.status == "stopped":
            stopped = True
            results.extend(FileResult(f, "stopped") for f, _ in files[i + 1:])
            break
    points = store.count(client, name)
    ok = sum(r.status in ("indexed", "unchanged") for r in results)
    overall(1.0 if not stopped else ok / n,
            f"{ok:,} of {n:,} files indexed" + (f", {len([r for r in results if r.status == 'failed'])} failed" if any(
                r.status == "failed" for r in results) else "") + ("; stopped" if stopped else "") + f"; {points:,} points")
    if build_index and not stopped:
        store.build_index(client, name)
    return IngestReport(name, tuple(results), stopped, points, time.perf_counter() - start, embed_seconds)


def _one(client, name, spec, fname, data, embedder, tokenizer, replace, stop, batch, progress):
    """Index one file; (FileResult, seconds spent embedding)."""
    doc = documents.load_bytes(fname, data)
    if doc.source != fname:  # load_bytes keeps the base name only; keep the folder from a .zip
        doc = documents.Document(fname, doc.text, doc.kind, doc.pages)
    chunks = split([doc], spec.chunking, tokenizer, embedder)
    if not chunks:
        return FileResult(fname, "failed", error=f"{fname} gave no chunks: there is nothing to index."), 0.0
    ids = [c.id for c in chunks]
    stored = {pid for pid, _, _ in store.scroll(client, name, sources=[fname])}
    other = stored - set(ids)
    if other and not replace:
        return FileResult(fname, "exists", len(chunks), error=(
            f"{fname} is already in {name!r} with other text ({len(stored):,} chunks, {len(other):,} of them not in "
            "this file): pass replace=True to replace it, or rename the file.")), 0.0
    meta = store.info(client, name).meta
    avg_len = meta.get("bm25_avg_len")
    if avg_len is None:  # fixed once per collection (as pipeline.index does)
        avg_len = average_terms([c.text for c in chunks])
        store.set_meta(client, name, {**spec.meta(), **meta, "bm25_avg_len": avg_len})
    new = [c for c in chunks if c.id not in stored]
    done = len(chunks) - len(new)
    progress(done, len(chunks), "embedding")
    secs = 0.0
    for lo in range(0, len(new), batch):
        if stop.is_set():
            return FileResult(fname, "stopped", len(chunks), lo), secs
        part = new[lo: lo + batch]
        t0 = time.perf_counter()
        vectors = embed(embedder, [c.text for c in part])  # (B, D)
        secs += time.perf_counter() - t0
        store.upsert(client, name, part, vectors, [sparse_document(c.text, avg_len) for c in part])
        done += len(part)
        progress(done, len(chunks), "embedding")
    removed = 0
    if other:
        removed = store.delete_points(client, name, sorted(other))
    return FileResult(fname, "indexed" if new or removed else "unchanged", len(chunks), len(new), removed), secs
