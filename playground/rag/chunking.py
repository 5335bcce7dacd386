"""Cutting documents into chunks, four ways, each chunk with exact offsets into its source.

- ``recursive``: LangChain's RecursiveCharacterTextSplitter; size and overlap in characters.
  It tries paragraph breaks, then line breaks, then spaces, then characters.
- ``tokens``: LangChain's token windowing (`split_text_on_tokens`) on the embedding model's own
  tokenizer; size and overlap in tokens. Windows are cut at token boundaries of the original
  text (via the tokenizer's offset mapping), so a chunk is a slice of the source; decoding the
  ids instead would give WordPiece's lower-cased, re-spaced text.
- ``sentence``: LlamaIndex's SentenceSplitter, counting tokens with the embedding tokenizer;
  it keeps sentences whole where it can.
- ``semantic``: LlamaIndex's SemanticSplitterNodeParser on our embedding model (wrapped as a
  LlamaIndex embedding, no network): a new chunk starts where the meaning of consecutive
  sentences shifts most (distance above the breakpoint percentile). A group longer than
  `size` tokens is then cut with the sentence splitter, so every chunk stays within bounds.

Every `Chunk` carries its source, its position (0, 1, 2... within the source), and `start`,
`end` such that ``source_text[start:end] == chunk.text``. Chunks of one source come in order
(starts strictly increase) and together cover every non-space character of the source.

What it leaves out: embedding (playground.rag.embedding) and storing (playground.rag.store).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from playground.errors import InputError, PlaygroundError
from playground.options import option, validate
from playground.rag.documents import Document

Progress = Callable[[float, str], None]

METHODS = {
    "recursive": "Recursive character splitter (LangChain)",
    "tokens": "Token splitter on the embedder's tokenizer (LangChain)",
    "sentence": "Sentence splitter (LlamaIndex)",
    "semantic": "Semantic splitter on the embedder (LlamaIndex)",
}
UNITS = {"recursive": "characters", "tokens": "tokens", "sentence": "tokens", "semantic": "tokens"}
DEFAULTS = {  # (size, overlap) that suit each method
    "recursive": (500, 50),
    "tokens": (128, 16),
    "sentence": (128, 16),
    "semantic": (192, 0),
}
_NAMESPACE = uuid.UUID("6f0c1d2e-6a7b-4f39-9c51-4b2f8f0a9e11")


@dataclass(frozen=True)
class ChunkSettings:
    """How to cut documents. `size` and `overlap` are characters for ``recursive``, tokens otherwise."""

    method: str = "recursive"
    size: int = option(500, 16, 4000, "the largest chunk: characters (recursive) or tokens (the others)", 1)
    overlap: int = option(50, 0, 1000, "how much of a chunk's end the next chunk repeats (same unit as size)", 1)
    breakpoint_percentile: int = option(
        95, 50, 99, "semantic splitter: a new chunk starts where the distance between neighbouring sentences "
        "is above this percentile of all such distances in the document", 1)

    @property
    def unit(self) -> str:
        return UNITS.get(self.method, "?")

    @property
    def label(self) -> str:
        if self.method == "semantic":
            return f"semantic p{self.breakpoint_percentile}, ≤{self.size} tokens"
        return f"{self.method} {self.size}/{self.overlap} {self.unit}"

    def check(self) -> ChunkSettings:
        if self.method not in METHODS:
            raise InputError(f"Unknown chunking method {self.method!r}; use one of {', '.join(METHODS)}.")
        validate(self)
        if self.method != "semantic" and self.overlap >= self.size:
            raise InputError(
                f"The overlap ({self.overlap} {self.unit}) must be smaller than the chunk size ({self.size} {self.unit})."
            )
        return self


@dataclass(frozen=True)
class Chunk:
    """A slice of a source text: ``source_text[start:end] == text``.

    `tokens`: how many tokens of the embedding tokenizer's cut of the source fall in the slice.
    """

    source: str
    position: int
    start: int
    end: int
    text: str
    tokens: int = 0

    @property
    def id(self) -> str:
        """A content hash: the same chunk of the same source always has the same point id."""
        digest = hashlib.sha256(f"{self.source}\x00{self.start}\x00{self.end}\x00{self.text}".encode()).hexdigest()
        return str(uuid.uuid5(_NAMESPACE, digest))


# --- the splitters: each returns pieces of text, in order -----------------------------------

def _recursive(text: str, s: ChunkSettings, tokenizer) -> list[str]:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter(chunk_size=s.size, chunk_overlap=s.overlap).split_text(text)


def _token_windows(text: str, s: ChunkSettings, tokenizer) -> list[str]:
    from langchain_text_splitters.base import Tokenizer, split_text_on_tokens

    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = [o for o in enc["offset_mapping"] if o[1] > o[0]]  # (T, 2) char spans of the tokens
    # "ids" are token positions; decoding a window slices the original text from its first to its last token.
    windows = Tokenizer(
        chunk_overlap=s.overlap,
        tokens_per_chunk=s.size,
        encode=lambda _text: list(range(len(offsets))),
        decode=lambda ids: text[offsets[ids[0]][0]: offsets[ids[-1]][1]],
    )
    return split_text_on_tokens(text=text, tokenizer=windows)


def _encode_fn(tokenizer) -> Callable[[str], list[int]]:
    """str -> token ids without special tokens; the Rust tokenizer directly when there is one (5x faster)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return lambda t: backend.encode(t, add_special_tokens=False).ids
    return lambda t: tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"]


def _sentence(text: str, s: ChunkSettings, tokenizer) -> list[str]:
    from llama_index.core.node_parser import SentenceSplitter

    splitter = SentenceSplitter(chunk_size=s.size, chunk_overlap=s.overlap, tokenizer=_encode_fn(tokenizer))
    return splitter.split_text(text)


def _semantic(text: str, s: ChunkSettings, tokenizer, embed_model) -> list[str]:
    from llama_index.core import Document as LlamaDocument
    from llama_index.core.node_parser import SemanticSplitterNodeParser, SentenceSplitter

    parser = SemanticSplitterNodeParser.from_defaults(
        embed_model=embed_model, breakpoint_percentile_threshold=s.breakpoint_percentile, buffer_size=1,
        include_metadata=False, include_prev_next_rel=False,
    )
    groups = [n.get_content() for n in parser.get_nodes_from_documents([LlamaDocument(text=text)])]
    cap = SentenceSplitter(chunk_size=s.size, chunk_overlap=0, tokenizer=_encode_fn(tokenizer))
    count = _encode_fn(tokenizer)
    out: list[str] = []
    for g in groups:
        out.extend([g] if len(count(g)) <= s.size else cap.split_text(g))
    return out


# --- offsets --------------------------------------------------------------------------------

def _locate(source: str, text: str, pieces: Sequence[str]) -> list[tuple[int, int, str]]:
    """(start, end, exact text) of each piece, in order; tolerant of changed whitespace.

    A piece may occur more than once (a table rule, a repeated line). Splitters cut the text
    contiguously, so the next piece starts at most at the first non-space character after the
    previous one ends; among the occurrences up to there, the last is taken (the furthest along).
    """
    out: list[tuple[int, int, str]] = []
    prev_start, prev_end = -1, 0
    for piece in pieces:
        stripped = piece.strip()
        if not stripped:
            continue
        limit = prev_end
        while limit < len(text) and text[limit].isspace():
            limit += 1
        words = stripped.split()
        pattern = re.compile(r"\s+".join(re.escape(w) for w in words))

        def occurrences():
            i = text.find(stripped, prev_start + 1)
            if i < 0:  # a splitter normalised whitespace: match word for word
                m = pattern.search(text, prev_start + 1)
                while m is not None:
                    yield m.start(), m.end()
                    m = pattern.search(text, m.start() + 1)
                return
            while i >= 0:
                yield i, i + len(stripped)
                i = text.find(stripped, i + 1)

        best: tuple[int, int] | None = None
        for a, b in occurrences():
            if best is None or a <= limit:
                best = (a, b)
            if a >= limit:
                break
        if best is None:
            raise PlaygroundError(f"Chunk {len(out)} of {source} was not found in its text: {stripped[:60]!r}…")
        a, b = best
        out.append((a, b, text[a:b]))
        prev_start, prev_end = a, b
    return out


def count_tokens(tokenizer, texts: Sequence[str]) -> list[int]:
    """Tokens of each text by `tokenizer`, without special tokens."""
    if not texts:
        return []
    ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    return [len(x) for x in ids]


def _tokens_in_spans(tokenizer, text: str, spans: Sequence[tuple[int, int, str]]) -> list[int]:
    """Tokens of the source's tokenization that overlap each span.

    Counted in place rather than on the chunk alone, so that a token window of N tokens counts N
    even when it starts inside a word (alone, "##ization" would re-tokenize as two pieces).
    For chunks cut at word boundaries both counts agree.
    """
    import bisect

    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = [o for o in enc["offset_mapping"] if o[1] > o[0]]
    starts = [a for a, _ in offsets]
    ends = [b for _, b in offsets]
    # tokens overlapping [a, b): those ending after a and starting before b
    return [bisect.bisect_left(starts, b) - bisect.bisect_right(ends, a) for a, b, _ in spans]


def split_document(doc: Document, settings: ChunkSettings, tokenizer, embed_model=None) -> list[Chunk]:
    """The chunks of one document, in order, with offsets and token counts."""
    s = settings.check()
    if s.method == "recursive":
        pieces = _recursive(doc.text, s, tokenizer)
    elif s.method == "tokens":
        pieces = _token_windows(doc.text, s, tokenizer)
    elif s.method == "sentence":
        pieces = _sentence(doc.text, s, tokenizer)
    else:
        if embed_model is None:
            raise InputError("The semantic splitter needs the embedding model; none was given.")
        pieces = _semantic(doc.text, s, tokenizer, embed_model)
    spans = _locate(doc.source, doc.text, pieces)
    tokens = _tokens_in_spans(tokenizer, doc.text, spans)
    return [Chunk(doc.source, i, a, b, t, n) for i, ((a, b, t), n) in enumerate(zip(spans, tokens))]


def split(documents: Sequence[Document], settings: ChunkSettings, tokenizer, embedder=None,
          progress: Progress | None = None) -> list[Chunk]:
    """Chunks of every document (sources must be distinct). `embedder` is needed by ``semantic`` only."""
    settings.check()
    if not documents:
        raise InputError("There are no documents to chunk: load the sample corpus, upload files or paste text.")
    names = [d.source for d in documents]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"Two documents share the name {dupes[0]!r}; rename one (chunks point back to their source by name).")
    embed_model = None
    if settings.method == "semantic":
        from playground.rag.embedding import as_llama_index

        embed_model = as_llama_index(embedder)
    out: list[Chunk] = []
    for i, doc in enumerate(documents):
        if progress:
            progress(i / len(documents), f"chunking {doc.source} ({i + 1}/{len(documents)})")
        out.extend(split_document(doc, settings, tokenizer, embed_model))
    if progress:
        progress(1.0, f"{len(out):,} chunks from {len(documents):,} document(s)")
    return out


def coverage(chunks: Sequence[Chunk], text: str) -> float:
    """Fraction of the non-space characters of `text` that fall inside some chunk (1.0 = all)."""
    covered = bytearray(len(text))
    for c in chunks:
        covered[c.start:c.end] = b"\x01" * (c.end - c.start)
    want = [i for i, ch in enumerate(text) if not ch.isspace()]
    return sum(covered[i] for i in want) / len(want) if want else 1.0
