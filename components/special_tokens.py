"""The warning under a prompt box when the text holds characters a model reads as a control token
(`<|im_end|>`, `<bos>`, `[SEP]`...): where, which token the model sees there and what it means, and
one switch to send them as plain text instead (playground.special).

`check(text, tokenizers, key)` (the tokenizers, or a function that gives them, called only when
the text holds a `<` or a `[`) draws nothing when there is nothing to flag and returns False;
otherwise it draws the warning and the switch and returns the switch's value.

What it leaves out: finding and encoding (playground.special), and models on a server, which
tokenize the text themselves (their entries have no tokenizer here and are not checked).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import streamlit as st

from components import cache
from playground import special
from playground.registry import get_model

MAX_LISTED = 6  # places listed per model; the rest are counted


def tokenizers(model_ids: Sequence[str]) -> dict[str, object]:
    """label -> tokenizer for the entries whose text the app tokenizes (transformers and llama.cpp
    entries; a server's model tokenizes by itself). A tokenizer that cannot be loaded is left out."""
    out: dict[str, object] = {}
    for mid in model_ids:
        try:
            spec = get_model(mid)
            if spec.engine == "remote":
                continue
            out.setdefault(spec.label, cache.tokenizer(spec.base_id if spec.source == "bundled" else spec.id))
        except Exception:  # noqa: BLE001 - a tokenizer not at hand: that model is not checked, the page goes on
            continue
    return out


def _code(text: str) -> str:
    return "`" + text.replace("`", "ˋ").replace("\n", "↵") + "`"


def message(found: Mapping[tuple[str, str], Sequence[special.SpecialHit]], plain: bool) -> str:
    """The warning: per (model, where) the places, the control token read there and what it means."""
    lines = []
    for (label, where), hits in found.items():
        if not hits:
            continue
        listed = ", ".join(f"{_code(h.typed)} at character {h.start + 1:,} → control token {_code(h.token)} "
                           f"(id {h.token_id:,}: {h.meaning})" for h in hits[:MAX_LISTED])
        more = f", and {len(hits) - MAX_LISTED} more" if len(hits) > MAX_LISTED else ""
        lines.append(f"- **{label}** reads{f' in *{where}*' if where else ''} {listed}{more}.")
    head = ("Your text holds characters the model reads as **control tokens**, not as text: there the model sees "
            "one special token (a turn ending, a text starting...), as if the app had put it there.")
    tail = ("**Sent as plain text**: these characters reach the model as ordinary tokens." if plain else
            "Switch on *Send them as plain text* to have the model read the characters themselves.")
    return "\n\n".join([head, "\n".join(lines), tail])


def check(text: str | Mapping[str, str], toks: Mapping[str, object] | Callable[[], Mapping[str, object]], key: str,
          where=None) -> bool:
    """Flag the special tokens typed in `text` (or in each of several named texts) for each tokenizer;
    returns whether to send them as plain text."""
    where = where or st
    texts = {"": text} if isinstance(text, str) else dict(text)
    texts = {name: t for name, t in texts.items() if special.might_hold(t)}
    if not texts:  # nothing to flag: no tokenizer is even loaded
        return False
    toks = toks() if callable(toks) else toks
    found = {(label, name): special.find(tok, t) for label, tok in toks.items() for name, t in texts.items()}
    if not any(found.values()):
        return False
    plain = bool(st.session_state.get(key, False))
    where.warning(message(found, plain), icon=":material/warning:")
    return bool(where.toggle("Send them as plain text", key=key,
                             help="Tokenize your text with split_special_tokens: its characters become ordinary "
                                  "tokens, and only the chat template's own special tokens stay control tokens."))
