"""What a tokenizer makes of a text, token by token: ids, pieces, offsets, bytes, special tokens.

`tokenize(tokenizer, text)` returns a `Tokenization`: every id the model receives (counts,
context fill) and, for the whole text or its first `detail_chars` characters, one `Token`
per id with its piece as the vocabulary stores it, the characters it covers and the UTF-8
bytes it stands for. `compare(...)` lines several tokenizations of one text up at the
character positions where they all cut; `render_chat(...)` shows the exact string a chat
template makes of some messages, where its special tokens sit and how many tokens the
template itself adds; `decode(...)` turns ids back into text and names ids outside the
vocabulary.

Bytes are honest. A byte-level BPE tokenizer (GPT-2 style, SmolLM2) stores each byte as a
printable character ('Ġ' is the space byte 0x20), so a token's bytes are read back from its
piece, and an emoji split over three tokens gives three tokens whose bytes are parts of one
character (`Token.partial`). A SentencePiece tokenizer with byte fallback (Gemma) writes
bytes it has no piece for as `<0xF0>`; those pieces are single bytes, the others are text
with '▁' for a space. Other tokenizers (WordPiece, MiniLM) normalize the text first
(lower-casing, accent stripping, dropping control characters), so their pieces are not the
text: their tokens' bytes are those of the source characters they cover.

Offsets need a fast (Rust `tokenizers`-backed) tokenizer; a slow one raises CapabilityError.

What it leaves out: loading tokenizers (playground.loading), rendering (components.tokens)
and anything that runs a model.

>>> from playground.loading import load_tokenizer                      # doctest: +SKIP
>>> t = tokenize(load_tokenizer("smollm2-135m-instruct"), "Hi 👋")      # doctest: +SKIP
>>> [(x.piece, x.bytes.hex(" "), x.partial) for x in t.tokens]         # doctest: +SKIP
[('Hi', '48 69', False), ('ĠðŁ', '20 f0 9f', True), ('ĳ', '91', True), ('ĭ', '8b', True)]
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from playground.errors import CapabilityError, InputError, TemplateError

ByteScheme = Literal["byte-level", "byte-fallback", "text"]
BYTE_LEVEL: ByteScheme = "byte-level"
BYTE_FALLBACK: ByteScheme = "byte-fallback"
TEXT: ByteScheme = "text"

MAX_TEXT_BYTES = 2 * 1024 * 1024  # 2 MiB of UTF-8: tokenized in about 1-3 s on 2 CPU cores
MAX_IDS = 100_000  # ids accepted by `decode`
MAX_CHAT_CHARS = 200_000  # characters of all messages together: a chat prompt is detailed whole
ROLES = ("system", "user", "assistant")

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """One id of a tokenized text, with what it stands for."""

    index: int  # position in the sequence the model receives
    id: int
    piece: str  # as the vocabulary stores it: 'Ġworld', '▁world', '##ing', '<0xF0>', '<bos>'
    text: str  # the source characters it covers, text[start:end]; '' for a token the tokenizer added
    start: int  # character offsets into the text, end exclusive
    end: int
    bytes: bytes  # the UTF-8 bytes it stands for (see the module docstring for each scheme)
    is_special: bool  # a control token: <bos>, [CLS], <|im_end|>, added or typed in the text
    added: bool  # put there by the tokenizer (BOS, CLS, SEP), not read from the text

    @property
    def partial(self) -> bool:
        """The bytes are not whole UTF-8 characters: part of a multi-byte character."""
        try:
            self.bytes.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    @property
    def hex(self) -> str:
        return self.bytes.hex(" ").upper()


@dataclass(frozen=True)
class Tokenization:
    """A text through one tokenizer: every id, and `tokens` in detail (all, or a first part)."""

    model_id: str
    text: str
    ids: tuple[int, ...]  # every id the model receives, special ones included
    tokens: tuple[Token, ...]  # every token, or those starting in the first `detail_chars` characters
    byte_scheme: ByteScheme
    special_count: int  # special ids (added by the tokenizer or typed in the text)
    added_count: int  # ids the tokenizer added that are not in the text (BOS, CLS, SEP)
    vocab_size: int
    context_length: int | None = None  # the model's context window in tokens, if known

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def text_tokens(self) -> int:
        """Tokens that come from the text (all but the added special ones)."""
        return len(self.ids) - self.added_count

    @property
    def chars(self) -> int:
        return len(self.text)

    @property
    def n_bytes(self) -> int:
        return len(self.text.encode("utf-8"))

    @property
    def chars_per_token(self) -> float:
        return self.chars / self.text_tokens if self.text_tokens else 0.0

    @property
    def complete(self) -> bool:
        """`tokens` holds every id (no detail limit cut it)."""
        return len(self.tokens) == len(self.ids)

    @property
    def detail_chars(self) -> int:
        """How many leading characters `tokens` covers."""
        if self.complete:
            return self.chars
        return max((t.end for t in self.tokens), default=0)

    @property
    def context_fill(self) -> float | None:
        """Tokens over the context window (above 1 when the text does not fit)."""
        if not self.context_length:
            return None
        return self.count / self.context_length

    @property
    def bytes_match_text(self) -> bool:
        """The tokens' bytes, put together, are exactly the text's UTF-8 bytes."""
        return self.complete and b"".join(t.bytes for t in self.tokens if not t.added) == self.text.encode("utf-8")

    @property
    def specials(self) -> tuple[Token, ...]:
        return tuple(t for t in self.tokens if t.is_special)


@dataclass(frozen=True)
class Segment:
    """A stretch of text between two positions where every compared tokenizer cuts."""

    start: int
    end: int
    text: str
    cuts: tuple[tuple[Token, ...], ...]  # per tokenization (in `Comparison` order), its tokens here

    @property
    def agree(self) -> bool:
        """Every tokenizer cuts this stretch the same way: one token each, or the same byte pieces."""
        if all(len(c) == 1 for c in self.cuts):
            return True
        return len({tuple(t.bytes for t in c) for c in self.cuts}) == 1


@dataclass(frozen=True)
class Comparison:
    """One text through several tokenizers, lined up at their common boundaries."""

    tokenizations: tuple[Tokenization, ...]
    segments: tuple[Segment, ...]
    chars: int  # how many leading characters the segments cover

    @property
    def model_ids(self) -> tuple[str, ...]:
        return tuple(t.model_id for t in self.tokenizations)

    @property
    def differing(self) -> int:
        """Segments that the tokenizers cut differently."""
        return sum(1 for s in self.segments if not s.agree)

    @property
    def complete(self) -> bool:
        return self.chars == len(self.tokenizations[0].text) if self.tokenizations else True


@dataclass(frozen=True)
class Message:
    role: str  # system, user or assistant
    content: str


@dataclass(frozen=True)
class ChatPrompt:
    """The exact prompt a model receives for some messages, and what the template adds."""

    model_id: str
    has_template: bool
    text: str  # the string the model receives (before its special tokens are parsed)
    tokenization: Tokenization
    content_spans: tuple[tuple[int, int], ...]  # where each message's content sits in `text`
    end_of_turn: str | None  # the special token that closes a turn (<|im_end|>, <end_of_turn>)
    end_of_sequence: str | None  # the tokenizer's end-of-sequence token
    note: str = ""  # what happened to the messages when there is no template

    def _in_content(self, t: Token) -> bool:
        return any(t.start < e and s < t.end for s, e in self.content_spans)

    @property
    def template_tokens(self) -> int:
        """Tokens the template adds: those outside every message's content."""
        return sum(1 for t in self.tokenization.tokens if not self._in_content(t))

    @property
    def content_tokens(self) -> int:
        return self.tokenization.count - self.template_tokens


@dataclass(frozen=True)
class Decoded:
    """Ids turned back into text."""

    model_id: str
    ids: tuple[int, ...]
    pieces: tuple[str, ...]
    special: tuple[bool, ...]
    text: str  # special tokens kept, no clean-up of spaces


# --- inputs --------------------------------------------------------------------------------


def check_text(text: Any, what: str = "The text") -> str:
    """`text` as a str within MAX_TEXT_BYTES of UTF-8; InputError with the sizes otherwise."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be a string, not {type(text).__name__}.")
    if len(text) > MAX_TEXT_BYTES:  # more characters than bytes allowed: too long whatever they are
        raise InputError(
            f"{what} is {len(text):,} characters; the limit is {MAX_TEXT_BYTES:,} bytes of UTF-8 "
            f"({MAX_TEXT_BYTES / 2**20:.0f} MiB). Cut it or upload a smaller file."
        )
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{what} holds a lone surrogate (U+{ord(text[exc.start]):04X}) at character {exc.start:,}, "
            "which is not a Unicode character and has no UTF-8 bytes. Remove it."
        ) from exc
    if size > MAX_TEXT_BYTES:
        raise InputError(
            f"{what} is {size:,} bytes of UTF-8 ({len(text):,} characters); the limit is {MAX_TEXT_BYTES:,} bytes "
            f"({MAX_TEXT_BYTES / 2**20:.0f} MiB). Cut it or upload a smaller file."
        )
    return text


def read_text_file(data: bytes, name: str = "The file") -> str:
    """The text of an uploaded file, through the app's one reader (playground.uploads.read_text):
    UTF-8 (a byte-order mark says otherwise: UTF-8, UTF-16 or UTF-32 with a BOM are read as such),
    no binary content, at most MAX_TEXT_BYTES.

    Raises InputError naming the first byte that is not UTF-8 (position, line, column), the
    binary content, or the size over the limit.
    """
    from playground.uploads import read_text

    if not isinstance(data, (bytes, bytearray)):
        raise InputError(f"{name} must be bytes, not {type(data).__name__}.")
    return check_text(read_text(bytes(data), name, MAX_TEXT_BYTES, what="a UTF-8 text file"), name)


def parse_ids(raw: str | Sequence[int]) -> list[int]:
    """Ids from '1, 2 3', '[1, 2, 3]' or a list; InputError naming what is not an integer."""
    if isinstance(raw, str):
        items = [p for p in re.split(r"[\s,;\[\]()]+", raw.strip()) if p]
        bad = [p for p in items if not re.fullmatch(r"[+-]?\d+", p)]
        if bad:
            shown = ", ".join(repr(b) for b in bad[:5]) + (f" and {len(bad) - 5:,} more" if len(bad) > 5 else "")
            raise InputError(f"Not integer ids: {shown}. Write ids separated by commas or spaces, e.g. 1, 2, 3.")
        ids = [int(p) for p in items]
    else:
        ids = []
        for x in raw:
            if isinstance(x, bool) or not isinstance(x, int):
                raise InputError(f"{x!r} is not an integer id.")
            ids.append(int(x))
    if not ids:
        raise InputError("No ids given. Write ids separated by commas or spaces, e.g. 1, 2, 3.")
    if len(ids) > MAX_IDS:
        raise InputError(f"{len(ids):,} ids given; the limit is {MAX_IDS:,}.")
    return ids


# --- tokenizer facts -----------------------------------------------------------------------


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable character -> the byte it stands for."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _backend(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not getattr(tokenizer, "is_fast", False):
        raise CapabilityError(
            f"This tokenizer ({type(tokenizer).__name__}) is not a fast one: it gives no character offsets, "
            "so its tokens cannot be placed over the text."
        )
    return backend


def byte_scheme(tokenizer) -> ByteScheme:
    """How a token's bytes are read from its piece: byte-level, byte-fallback, or from the text."""
    backend = _backend(tokenizer)
    if "ByteLevel" in str(backend.decoder) or "ByteLevel" in str(backend.pre_tokenizer):
        return BYTE_LEVEL
    if getattr(backend.model, "byte_fallback", False):
        return BYTE_FALLBACK
    return TEXT


def _added(tokenizer) -> tuple[set[int], dict[int, str]]:
    """Special ids, and the content of every added token (stored as raw text, not byte-mapped)."""
    decoder = tokenizer.added_tokens_decoder  # {id: AddedToken}
    special = {i for i, t in decoder.items() if t.special} | set(tokenizer.all_special_ids)
    return special, {i: t.content for i, t in decoder.items()}


def _piece_bytes(piece: str, scheme: ByteScheme) -> bytes | None:
    if scheme == BYTE_LEVEL:
        table = _byte_decoder()
        try:
            return bytes(table[c] for c in piece)
        except KeyError:
            return None
    if scheme == BYTE_FALLBACK:
        m = _BYTE_PIECE.match(piece)
        if m:
            return bytes([int(m.group(1), 16)])
        return piece.replace("▁", " ").encode("utf-8")
    return None


# --- tokenize --------------------------------------------------------------------------------


def tokenize(
    tokenizer,
    text: str,
    *,
    model_id: str = "",
    add_special_tokens: bool = True,
    detail_chars: int | None = None,
    context_length: int | None = None,
) -> Tokenization:
    """Tokenize `text` the way the model receives it; build `Token`s for its first `detail_chars`.

    Counts always cover the whole text. `detail_chars=None` details every token.
    Raises InputError (text too long, not a string) or CapabilityError (no fast tokenizer).
    """
    check_text(text)
    if detail_chars is not None and detail_chars < 0:
        raise InputError(f"detail_chars is {detail_chars}; it must be 0 or more.")
    scheme = byte_scheme(tokenizer)
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True, verbose=False)
    ids: list[int] = enc["input_ids"]
    offsets: list[tuple[int, int]] = enc["offset_mapping"]
    special, added_content = _added(tokenizer)

    n = len(ids)
    if detail_chars is not None:
        for i, (s, e) in enumerate(offsets):
            if s >= detail_chars and not (s == e == 0 and ids[i] in special):
                n = i
                break
    pieces = tokenizer.convert_ids_to_tokens(ids[:n])
    tokens = []
    for i in range(n):
        tid, (s, e), piece = ids[i], offsets[i], pieces[i]
        is_special = tid in special
        added = is_special and s == e
        src = text[s:e]
        if added:
            raw = b""
        elif tid in added_content or scheme == TEXT:
            # An added token (typed in the text, or [UNK] standing for what the vocabulary lacks)
            # and a normalizing tokenizer's token stand for the source characters they cover.
            raw = src.encode("utf-8")
        else:
            raw = _piece_bytes(piece, scheme)
            if raw is None:
                raw = src.encode("utf-8")
        tokens.append(Token(i, tid, piece, src, s, e, raw, is_special, added))
    special_at = [i for i, t in enumerate(ids) if t in special]
    special_count = len(special_at)
    added_count = sum(1 for i in special_at if offsets[i][0] == offsets[i][1])
    return Tokenization(
        model_id=model_id,
        text=text,
        ids=tuple(ids),
        tokens=tuple(tokens),
        byte_scheme=scheme,
        special_count=special_count,
        added_count=added_count,
        vocab_size=len(tokenizer),
        context_length=context_length,
    )


# --- compare ---------------------------------------------------------------------------------


def _common_boundaries(tokenizations: Sequence[Tokenization], upto: int) -> list[int]:
    """Character positions in [0, upto] that no token of any tokenization straddles."""
    inside = bytearray(upto + 1)  # 1 where some token starts before and ends after the position
    for tk in tokenizations:
        for t in tk.tokens:
            end = min(t.end, upto + 1)
            if not t.added and end - t.start > 1:
                inside[t.start + 1:end] = b"\x01" * (end - t.start - 1)
    return [p for p in range(upto + 1) if not inside[p] or p in (0, upto)]


def compare(tokenizations: Sequence[Tokenization]) -> Comparison:
    """Line tokenizations of one text up at the positions where all of them cut.

    Covers the characters every tokenization details (all of them when each is complete).
    Raises InputError if there are none or they are of different texts.
    """
    tks = tuple(tokenizations)
    if not tks:
        raise InputError("Nothing to compare: pick at least one tokenizer.")
    texts = {t.text for t in tks}
    if len(texts) != 1:
        raise InputError(f"The tokenizations are of {len(texts)} different texts; compare one text.")
    text = tks[0].text
    upto = min(t.detail_chars for t in tks)
    bounds = _common_boundaries(tks, upto)
    spans = list(zip(bounds, bounds[1:]))
    if not spans and upto == 0:
        return Comparison(tks, (), 0)
    starts = [a for a, _ in spans]
    cuts: list[list[list[Token]]] = [[[] for _ in tks] for _ in spans]
    for k, t in enumerate(tks):
        for tok in t.tokens:
            if tok.added or tok.start >= upto:
                continue
            j = bisect.bisect_right(starts, tok.start) - 1
            cuts[j][k].append(tok)
    segments = tuple(
        Segment(a, b, text[a:b], tuple(tuple(c) for c in cut)) for (a, b), cut in zip(spans, cuts)
    )
    return Comparison(tks, segments, upto)


# --- chat template ---------------------------------------------------------------------------


def _messages(messages: Sequence[Message | dict]) -> list[Message]:
    out = []
    for i, m in enumerate(messages):
        role, content = (m.role, m.content) if isinstance(m, Message) else (m.get("role"), m.get("content"))
        if role not in ROLES:
            raise InputError(f"Message {i + 1} has role {role!r}; use one of {', '.join(ROLES)}.")
        if not isinstance(content, str):
            raise InputError(f"Message {i + 1} ({role}) must have text content, not {type(content).__name__}.")
        out.append(Message(role, content))
    if not out:
        raise InputError("No messages: write at least a user message.")
    total = sum(len(m.content) for m in out)
    if total > MAX_CHAT_CHARS:
        raise InputError(
            f"The messages are {total:,} characters together; the limit is {MAX_CHAT_CHARS:,}. "
            "Tokenize long texts in the Tokens view; keep chat messages short."
        )
    check_text("".join(m.content for m in out), "The messages")
    return out


def _content_spans(text: str, contents: Sequence[str]) -> tuple[tuple[int, int], ...]:
    spans, pos = [], 0
    for c in contents:
        for probe in (c, c.strip()):
            if not probe:
                break
            at = text.find(probe, pos)
            if at >= 0:
                spans.append((at, at + len(probe)))
                pos = at + len(probe)
                break
    return tuple(spans)


def render_chat(
    tokenizer,
    messages: Sequence[Message | dict],
    *,
    model_id: str = "",
    add_generation_prompt: bool = True,
    context_length: int | None = None,
) -> ChatPrompt:
    """The exact prompt for `messages`: through the chat template when the tokenizer has one.

    With no template the model receives the last user message as it is, with the tokenizer's
    own special tokens (as `playground.generate.format_prompt` sends it); `note` says so.
    Raises InputError for bad messages, TemplateError when the template refuses them.
    """
    msgs = _messages(messages)
    template = getattr(tokenizer, "chat_template", None)
    eos = getattr(tokenizer, "eos_token", None)
    if not template:
        users = [m for m in msgs if m.role == "user"]
        sent = users[-1] if users else None
        text = sent.content if sent else ""
        dropped = sorted({m.role for m in msgs if m is not sent and m.content})
        note = "This tokenizer has no chat template: the model receives the last user message as it is, with no roles"
        note += f"; the {' and '.join(dropped)} text is not sent." if dropped else "."
        tk = tokenize(tokenizer, text, model_id=model_id, add_special_tokens=True, context_length=context_length)
        return ChatPrompt(model_id, False, text, tk, ((0, len(text)),) if text else (), None, eos, note)
    try:
        text = tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in msgs],
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )
    except Exception as exc:  # noqa: BLE001 - jinja raises its own errors (e.g. roles must alternate)
        raise TemplateError(f"The chat template of {model_id or 'this model'} refused these messages: {exc}") from exc
    # A templated prompt already holds its special tokens (as playground.generate.encode_prompt sends it).
    tk = tokenize(tokenizer, text, model_id=model_id, add_special_tokens=False, context_length=context_length)
    spans = _content_spans(text, [m.content for m in msgs])
    end_of_turn = None
    if spans:
        after = spans[0][1]
        end_of_turn = next((t.piece for t in tk.tokens if t.is_special and t.start >= after), None)
    return ChatPrompt(model_id, True, text, tk, spans, end_of_turn, eos)


# --- decode ----------------------------------------------------------------------------------


def decode(tokenizer, ids: str | Sequence[int], *, model_id: str = "") -> Decoded:
    """Ids back to text (special tokens kept, spaces not cleaned up).

    Raises InputError naming every id outside the vocabulary (up to ten of them).
    """
    values = parse_ids(ids)
    size = len(tokenizer)
    bad = [i for i in values if not 0 <= i < size]
    if bad:
        shown = ", ".join(f"{b:,}" for b in bad[:10]) + (f" and {len(bad) - 10:,} more" if len(bad) > 10 else "")
        raise InputError(
            f"{'This id is' if len(bad) == 1 else 'These ids are'} outside the vocabulary of "
            f"{model_id or 'this tokenizer'} (0 to {size - 1:,}): {shown}."
        )
    special, _ = _added(tokenizer)
    text = tokenizer.decode(values, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    pieces = tuple(tokenizer.convert_ids_to_tokens(values))
    return Decoded(model_id, tuple(values), pieces, tuple(i in special for i in values), text)


# --- small helpers for views -----------------------------------------------------------------


def char_name(ch: str) -> str:
    """'U+1F468 MAN' for one character (the code point when it has no name)."""
    return f"U+{ord(ch):04X} {unicodedata.name(ch, '')}".strip()
