"""Special tokens typed as text: find where a tokenizer reads a person's characters as a control
token, and encode a prompt so that it reads them as ordinary text instead.

A tokenizer matches its added tokens (`<|im_end|>`, `<bos>`, `<end_of_turn>`, `[SEP]`...) anywhere
in a string before it splits the rest, so a person who types ``<|im_end|>`` in a question ends the
chat turn there: the model sees one control id, not ten characters. `find(tokenizer, text)` lists
each such place (characters, the token read, its id, what it means); `encode(...)` builds the
prompt ids with the person's text tokenized with ``split_special_tokens=True`` (its characters as
ordinary tokens) and only the chat template's own special tokens read as control tokens.

    hits = find(tok, "Say <|im_end|> please")     # one SpecialHit: characters 4-14, id 2
    ids = encode(tok, "Say <|im_end|> please", use_chat_template=True, plain=True)  # (1, T), no id 2 inside

The same applies on a llama.cpp entry: the app tokenizes its prompt with the transformers
tokenizer and hands llama.cpp the ids (playground.engines.llamacpp), so what `find` reports is
what llama.cpp receives, and `encode(plain=True)` is what it runs.

What it leaves out: a model on a server, which tokenizes the text itself (no tokenizer here:
nothing is found, and nothing can be sent "as plain text" but the characters themselves), and
rendering (components/special_tokens.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from playground.errors import InputError
from playground.generate import encode_prompt, format_prompt, templated

# What a control token means to the model, for the ones people meet; any other is "a control token".
MEANINGS = {
    "<|im_start|>": "the start of a chat turn", "<|im_end|>": "the end of a chat turn",
    "<start_of_turn>": "the start of a chat turn", "<end_of_turn>": "the end of a chat turn",
    "<|eot_id|>": "the end of a chat turn", "<|end|>": "the end of a chat turn",
    "<|endoftext|>": "the end of a text", "<eos>": "the end of a text", "</s>": "the end of a text",
    "<bos>": "the start of a text", "<s>": "the start of a text", "<|begin_of_text|>": "the start of a text",
    "<pad>": "padding (a filler the model was taught to ignore)", "[PAD]": "padding (a filler the model was taught to ignore)",
    "[SEP]": "a separator between two segments", "[CLS]": "the start of an encoded text",
    "[MASK]": "a hidden word to guess", "<mask>": "a hidden word to guess", "<unk>": "an unknown token",
    "[UNK]": "an unknown token",
}
_SENTINEL = "\ue000\ue001person's text\ue001\ue000"  # private-use characters no template writes


@dataclass(frozen=True)
class SpecialHit:
    """One place where typed characters are read as a control token."""

    start: int  # character offsets in the text
    end: int
    typed: str  # the characters
    token: str  # the token the tokenizer reads there
    token_id: int

    @property
    def meaning(self) -> str:
        return MEANINGS.get(self.token, "a control token, not text")


def might_hold(text: str) -> bool:
    """A quick look before any tokenizer is loaded: every special token of the bundled and the common
    Hub tokenizers is written with ``<`` or ``[``; a text with neither holds none of them."""
    return isinstance(text, str) and ("<" in text or "[" in text)


def control_ids(tokenizer) -> frozenset[int]:
    """The ids a tokenizer treats as control tokens: its special tokens and its added tokens marked special."""
    ids = {int(i) for i in (getattr(tokenizer, "all_special_ids", None) or ())}
    for i, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            ids.add(int(i))
    return frozenset(ids)


def find(tokenizer, text: str) -> tuple[SpecialHit, ...]:
    """Every place in `text` the tokenizer reads as a control token (none for a model with no tokenizer)."""
    if tokenizer is None or not isinstance(text, str) or not text:
        return ()
    controls = control_ids(tokenizer)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    hits = []
    for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
        if int(tid) in controls and b > a:
            hits.append(SpecialHit(int(a), int(b), text[a:b], tokenizer.convert_ids_to_tokens(int(tid)), int(tid)))
    return tuple(hits)


def encode(tokenizer, text: str, use_chat_template: bool = True, system: str | None = None,
           plain: bool = False) -> torch.Tensor:
    """The prompt ids (1, T) for `text`: as `playground.generate` encodes it, or with `plain` its characters
    as ordinary text (the chat template's own special tokens still read as control tokens).

    The person's text is tokenized on its own, so the pieces either side of it are split where it
    starts and ends; a chat template puts a new line or a special token there, where the tokenizer
    splits anyway. A template that changes the text it is given (strips it, say) is refused.
    """
    is_templated = templated(tokenizer, use_chat_template)
    formatted = format_prompt(tokenizer, text, use_chat_template, system)
    if not plain:
        return encode_prompt(tokenizer, formatted, is_templated)
    shell = format_prompt(tokenizer, _SENTINEL, use_chat_template, system)
    if shell.count(_SENTINEL) != 1 or shell.replace(_SENTINEL, text) != formatted:
        raise InputError("This model's chat template changes the text it is given, so the text cannot be sent as "
                         "plain text here: turn the chat template off, or take the special tokens out of the text.")
    before, after = shell.split(_SENTINEL)

    def ids(part: str, **kw) -> list[int]:
        return list(tokenizer(part, **kw).input_ids) if part else []

    # a raw prompt's own start (Gemma's <bos>) comes from add_special_tokens, as in encode_prompt
    head = ids(before, add_special_tokens=False) if is_templated else (
        list(tokenizer(before, add_special_tokens=True).input_ids))
    body = ids(text, add_special_tokens=False, split_special_tokens=True)
    tail = ids(after, add_special_tokens=False)
    if not is_templated and not before:  # add_special_tokens on "" may add an end token too (a BERT [SEP])
        head = list(tokenizer(text, add_special_tokens=True, split_special_tokens=True).input_ids)
        body = []
    return torch.tensor([head + body + tail], dtype=torch.long)
