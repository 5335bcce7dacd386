"""One reader for uploaded text: bytes and a file name in, a str out, or an InputError that says why not.

Every page reads an uploaded text file through `read_text` (the A/B page's CSV / JSONL inputs,
the RAG page's .txt / .md documents). It refuses, with the file name and the numbers:

- an empty file (0 bytes) and a file over the size limit (both sizes named);
- a file that is not text: a known binary format by its first bytes (PDF, ZIP / .xlsx / .docx,
  PNG, JPEG, GIF, gzip, SQLite), NUL bytes, or other control characters (the first one named
  by its position and line);
- text that is not UTF-8: the first byte that cannot be read, by position, line and column,
  and, when the bytes read as Windows-1252 (which covers Latin-1's letters), a note that they
  probably are, with the advice to save the file as UTF-8.

It never decodes with replacement characters and never guesses a legacy encoding: a file
that is not UTF-8 is refused, never silently mangled. Byte-order marks are the one honest
exception, because they say what the encoding is: UTF-8 with a BOM (Excel's "CSV UTF-8") is
read with the BOM dropped, and UTF-16 / UTF-32 with a BOM (Excel's "Unicode Text") are decoded
strictly as what the BOM says.

>>> read_text(b"question\\nWhy?\\n", "q.csv")
'question\\nWhy?\\n'
>>> read_text("café".encode("latin-1"), "menu.txt")
Traceback (most recent call last):
...
playground.errors.InputError: menu.txt is not UTF-8: byte 0xe9 at position 3 (line 1, column 4) cannot be read. It looks like Windows-1252 or Latin-1 (it would read 'café'). Save the file as UTF-8 and upload it again; nothing was changed.

What it leaves out: parsing (CSV / JSON in playground.experiments.inputs, PDF and HTML in
playground.rag.documents, which keep their own parsers) and Streamlit's own upload limit
(.streamlit/config.toml), which is larger than the limits here.
"""

from __future__ import annotations

import re

from playground.errors import InputError
from playground.limits import UPLOAD_BYTES

# (first bytes, what they are, what to do instead)
SIGNATURES = (
    (b"%PDF-", "a PDF document", "export the text, or upload it on a page that reads PDFs"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx, .docx or .zip file)", "export it as CSV or plain text"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image", "upload a text file"),
    (b"\xff\xd8\xff", "a JPEG image", "upload a text file"),
    (b"GIF8", "a GIF image", "upload a text file"),
    (b"\x1f\x8b", "a gzip archive", "unpack it first"),
    (b"SQLite format 3\x00", "an SQLite database", "export a table as CSV"),
    (b"\xd0\xcf\x11\xe0", "an old Office file (.xls / .doc)", "export it as CSV or plain text"),
)
BOMS = (  # longest first: the UTF-32 LE mark starts like UTF-16 LE's
    (b"\x00\x00\xfe\xff", "utf-32-be", "UTF-32"),
    (b"\xff\xfe\x00\x00", "utf-32-le", "UTF-32"),
    (b"\xef\xbb\xbf", "utf-8", "UTF-8"),
    (b"\xff\xfe", "utf-16-le", "UTF-16"),
    (b"\xfe\xff", "utf-16-be", "UTF-16"),
)


def mb(n: int) -> str:
    """A size as the upload limits state it: '5.0 MB' (MB of 1024 x 1024 bytes, as Streamlit counts)."""
    return f"{n / 1024 / 1024:.1f} MB"


def _where(text_or_bytes, pos: int) -> tuple[int, int]:
    """(line, column), both from 1, of position `pos`."""
    nl = b"\n" if isinstance(text_or_bytes, bytes) else "\n"
    line = text_or_bytes.count(nl, 0, pos) + 1
    start = text_or_bytes.rfind(nl, 0, pos) + 1
    return line, pos - start + 1


def binary_reason(data: bytes, signatures: bool = True) -> str | None:
    """Why `data` is not text (a known binary format, or NUL bytes), or None."""
    for magic, what, _ in SIGNATURES if signatures else ():
        if data.startswith(magic):
            return f"it is {what}"
    if any(data.startswith(bom) for bom, _, _ in BOMS):
        return None  # UTF-16 / 32: NUL bytes are expected
    nul = data.find(b"\x00")
    if nul >= 0:
        line, col = _where(data, nul)
        return f"it holds NUL bytes (the first at byte {nul:,}, line {line:,})"
    return None


def read_text(data: bytes, filename: str, max_bytes: int = UPLOAD_BYTES.value, *, what: str = "text") -> str:
    """The text of an uploaded file, or an InputError naming the file, the problem and the numbers."""
    name = filename or "the file"
    if len(data) == 0:
        raise InputError(f"{name} is empty (0 bytes): there is nothing to read.")
    if len(data) > max_bytes:
        raise InputError(f"{name} is {mb(len(data))} ({len(data):,} bytes); the limit is {mb(max_bytes)}. "
                         "Split it into smaller files, or keep the part you need.")
    for magic, kind, advice in SIGNATURES:
        if data.startswith(magic):
            nul = binary_reason(data, signatures=False)
            why = f"{nul}: it is {kind}" if nul else f"it is {kind}"
            raise InputError(f"{name} does not look like text: {why}. Upload {what} instead ({advice}).")
    for bom, codec, label in BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom):].decode(codec)  # strict: never a replacement character
            except UnicodeDecodeError as exc:
                pos = exc.start + len(bom)
                raise InputError(f"{name} starts with a {label} byte-order mark but is not valid {label}: the bytes "
                                 f"at position {pos:,} cannot be read ({exc.reason}). Save the file as UTF-8 and "
                                 "upload it again; nothing was changed.") from exc
            _refuse_controls(text, name, what)
            return text
    why = binary_reason(data)
    if why:
        raise InputError(f"{name} does not look like text: {why}. Upload {what} instead.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _where(data, exc.start)
        hint = ""
        start, end = data.rfind(b"\n", 0, exc.start) + 1, data.find(b"\n", exc.start)
        end = len(data) if end < 0 else end
        try:
            guess = data[max(start, exc.start - 30): min(end, exc.start + 30)].decode("cp1252").strip()
            hint = f" It looks like Windows-1252 or Latin-1 (it would read {guess!r})."
        except UnicodeDecodeError:
            pass
        excel = " (in Excel: Save As > 'CSV UTF-8')" if name.lower().endswith((".csv", ".tsv")) else ""
        raise InputError(
            f"{name} is not UTF-8: byte 0x{data[exc.start]:02x} at position {exc.start:,} (line {line:,}, column "
            f"{col:,}) cannot be read.{hint} Save the file as UTF-8{excel} and upload it again; nothing was changed."
        ) from exc
    _refuse_controls(text, name, what)
    return text


def _refuse_controls(text: str, name: str, what: str) -> None:
    """Control characters other than tab, newlines, vertical tab and form feed do not occur in text files."""
    m = _CONTROL.search(text)
    if m is None:
        return
    ch = m.group()
    kind = "NUL bytes" if ch == "\x00" else f"the control character U+{ord(ch):04X}"
    line, col = _where(text, m.start())
    raise InputError(f"{name} does not look like text: it holds {kind} (the first at line {line:,}, column {col:,}). "
                     f"Upload {what} instead.")


_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)  # two disjoint alternatives: linear, no backtracking blow-up


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in a JSON text (0 for a scalar), without parsing it.

    Python's json parser recurses once per level and raises RecursionError (or worse) on a
    text like '[' * 100_000; this counts brackets outside strings in one vectorised pass, so a
    caller can refuse such a text first. A malformed text gives some number; the parser then
    says what is wrong with it.

    >>> json_depth('{"a": [1, {"b": "[[["}]}')
    3
    """
    import numpy as np

    if "[" not in text and "{" not in text:
        return 0
    stripped = _JSON_STRING.sub('""', text)
    b = np.frombuffer(stripped.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    steps = (b == 0x5B).astype(np.int32) + (b == 0x7B) - (b == 0x5D) - (b == 0x7D)  # [ { ] }
    return int(np.cumsum(steps).max(initial=0))
