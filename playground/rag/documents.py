"""Documents for the RAG builder: uploaded files (txt, md, pdf, html), pasted text, and the
bundled sample corpus (Python's language reference, shipped with Python as `pydoc_data.topics`).

Every way in checks its input and raises `InputError` with the file name and what to do:
an empty file, a binary file named .txt, text that is not UTF-8, a corrupt or encrypted PDF,
a PDF with no extractable text, an unsupported extension, a file over 50 MB.

What it leaves out: OCR of scanned PDFs, office formats, and guessing legacy encodings (a
file that is not UTF-8 is refused with the offending byte named, never silently mangled).

>>> doc = from_text("notes", "Qdrant stores vectors.")
>>> doc.source, doc.kind, len(doc.text)
('notes', 'pasted', 22)
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from playground.errors import InputError
from playground.uploads import read_text

MAX_BYTES = 50 * 1024 * 1024  # the app's upload limit (.streamlit/config.toml: maxUploadSize = 50)
KINDS = {".txt": "txt", ".md": "md", ".markdown": "md", ".pdf": "pdf", ".html": "html", ".htm": "html"}
_TEXT_SNIFF = 8192  # bytes looked at to decide whether a "text" file is binary


@dataclass(frozen=True)
class Document:
    """One source text. `source` names it (a file name, a sample topic); chunks point back to it."""

    source: str
    text: str
    kind: str  # "txt" | "md" | "pdf" | "html" | "pasted" | "sample"
    pages: int = 0  # PDFs only

    @property
    def chars(self) -> int:
        return len(self.text)


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def _check_size(name: str, data: bytes) -> None:
    if len(data) == 0:
        raise InputError(f"{name} is empty (0 bytes): there is nothing to index.")
    if len(data) > MAX_BYTES:
        raise InputError(f"{name} is {_mb(len(data))}; the limit is {_mb(MAX_BYTES)}. Split it into smaller files.")


def _looks_binary(data: bytes) -> str | None:
    """Why `data` is not text, or None. NUL bytes never occur in UTF-8 text."""
    head = data[:_TEXT_SNIFF]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None  # UTF-16 with a byte-order mark: NULs are expected
    nul = head.find(b"\x00")
    if nul >= 0:
        return f"it holds NUL bytes (the first at byte {nul:,})"
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    if head and control / len(head) > 0.05:
        return f"{control:,} of its first {len(head):,} bytes are control characters"
    return None


def _decode(name: str, data: bytes) -> str:
    """The text of a .txt / .md upload, through the app's one reader (playground.uploads.read_text)."""
    return read_text(data, name, MAX_BYTES, what="a .txt, .md, .pdf or .html file")


def _nonempty(doc: Document) -> Document:
    if not doc.text.strip():
        raise InputError(f"{doc.source} holds no text (only whitespace): there is nothing to index.")
    return doc


def _pdf(name: str, data: bytes) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError, PdfStreamError

    if not data.lstrip()[:5].startswith(b"%PDF-"):
        raise InputError(f"{name} is not a PDF: it does not start with %PDF-. Is the file damaged or misnamed?")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Many PDFs are "encrypted" with an empty user password only to restrict printing: those open.
            try:
                opened = reader.decrypt("")
            except Exception as exc:  # noqa: BLE001 - e.g. an unsupported cipher
                raise InputError(f"{name} is encrypted and cannot be opened ({exc}). Remove the password and upload it again.") from exc
            if not opened:
                raise InputError(f"{name} is encrypted with a password. Remove the password and upload it again.")
        pages = [page.extract_text() or "" for page in reader.pages]
    except InputError:
        raise
    except FileNotDecryptedError as exc:
        raise InputError(f"{name} is encrypted with a password. Remove the password and upload it again.") from exc
    except (PdfReadError, PdfStreamError) as exc:
        raise InputError(f"{name} is a corrupt PDF that cannot be read ({type(exc).__name__}: {exc}).") from exc
    except Exception as exc:  # noqa: BLE001 - a damaged file can break the parser in many ways
        raise InputError(f"{name} is a PDF that cannot be read ({type(exc).__name__}: {exc}); is it damaged?") from exc
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise InputError(
            f"{name} has {len(pages):,} page(s) but no extractable text (scanned images?). Run OCR on it first."
        )
    return Document(name, text, "pdf", pages=len(pages))


def _html(name: str, data: bytes) -> Document:
    from bs4 import BeautifulSoup

    why = _looks_binary(data)
    if why:
        raise InputError(f"{name} does not look like HTML: {why}.")
    soup = BeautifulSoup(data, "html.parser")  # detects the encoding (meta charset, BOM, UTF-8)
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    lines = [line.strip() for line in soup.get_text("\n").splitlines()]
    text = "\n".join(line for line in lines if line)
    return _nonempty(Document(name, text, "html"))


def load_bytes(name: str, data: bytes) -> Document:
    """A Document from an uploaded file's name and bytes; raises InputError saying what is wrong."""
    name = Path(name or "upload").name
    suffix = Path(name).suffix.lower()
    if suffix not in KINDS:
        raise InputError(
            f"{name}: files of type {suffix or '(no extension)'!r} are not supported; use "
            f"{', '.join(sorted(set(KINDS)))}."
        )
    _check_size(name, data)
    kind = KINDS[suffix]
    if kind == "pdf":
        return _pdf(name, data)
    if kind == "html":
        return _html(name, data)
    return _nonempty(Document(name, _decode(name, data), kind))


def load_path(path: str | Path) -> Document:
    """A Document from a file on disk (same checks as an upload)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p} is not a file.")
    size = p.stat().st_size
    if size > MAX_BYTES:
        raise InputError(f"{p.name} is {_mb(size)}; the limit is {_mb(MAX_BYTES)}. Split it into smaller files.")
    return load_bytes(p.name, p.read_bytes())


def from_text(name: str, text: str) -> Document:
    """A Document from pasted text."""
    name = (name or "").strip() or "pasted text"
    if not isinstance(text, str) or not text.strip():
        raise InputError("The pasted text is empty: paste something to index.")
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise InputError(f"The pasted text is {_mb(len(text.encode('utf-8')))}; the limit is {_mb(MAX_BYTES)}.")
    return Document(name, text, "pasted")


# --- the sample corpus --------------------------------------------------------------------

def sample_topics() -> list[str]:
    """The topics of Python's language reference bundled with this Python (`pydoc_data.topics`)."""
    from pydoc_data.topics import topics

    return sorted(topics)


def sample_corpus(topics: Iterable[str] | None = None) -> list[Document]:
    """One Document per topic of Python's language reference (all of them by default)."""
    from pydoc_data.topics import topics as all_topics

    wanted = sample_topics() if topics is None else list(topics)
    unknown = [t for t in wanted if t not in all_topics]
    if unknown:
        raise InputError(f"Unknown sample topic(s): {', '.join(unknown)}. Known topics: {', '.join(sample_topics())}.")
    return [Document(t, all_topics[t], "sample") for t in wanted]


def unique_sources(documents: Iterable[Document]) -> list[Document]:
    """Documents with distinct sources: a repeated name gets " (2)", " (3)"... appended."""
    seen: dict[str, int] = {}
    out: list[Document] = []
    for d in documents:
        n = seen.get(d.source, 0) + 1
        seen[d.source] = n
        out.append(d if n == 1 else Document(f"{d.source} ({n})", d.text, d.kind, d.pages))
    return out
