"""Reading a page's link: every value a link carries is checked once, here, against what it feeds.

A page declares, per linked value, a `Link(param, spec)`: the query parameter's name and what it
feeds, one of

- `Number(lo, hi, integer)`, usually `Number.of(SettingsClass, "field")` so the bounds are the
  ones `playground.options` declares for the slider and the core;
- `Choice(options)`: one of a fixed set (a radio, a selectbox);
- `Flag()`: a toggle or a checkbox (``true`` / ``false``, ``1`` / ``0``, ``yes`` / ``no``, ``on`` / ``off``);
- `Text(max_chars)`: free text, at most `max_chars` read from a link;
- `Model(need)`: a model id that `registry.get_model` knows, able to generate or to embed.

`read(param, raw, spec, default)` returns a `Reading`: the value to use, and a note when the
link's value had to change, saying what was asked, what rule it broke and what is used
instead. Nothing is changed without a note.

>>> from playground.sampling import SamplingSettings
>>> r = read("temperature", "1e9", Number.of(SamplingSettings, "temperature"), 1.0)
>>> r.value, r.note
(2.0, 'The link asked for temperature 1e9; the most is 2.0, so 2.0 is used.')
>>> read("top_k", "nan", Number.of(SamplingSettings, "top_k"), 0).note
"The link asked for top_k 'nan', which is not a whole number; the default 0 is used."
>>> read("top_k", "7.0", Number.of(SamplingSettings, "top_k"), 0)
Reading(value=7, note=None)
>>> read("method", "fuzzy", Choice(("dense", "sparse", "hybrid")), "dense").note
"The link asked for method 'fuzzy'; the choices are dense, sparse, hybrid, so the default dense is used."
>>> read("chat", "maybe", Flag(), False).note
"The link asked for chat 'maybe', which is neither true nor false; the default false is used."

Writing a link is the other half: `fits(text, spec)` says whether a text is short enough to go
into a link. A browser and the server accept URLs of a few tens of kilobytes (Tornado, under
Streamlit, answers HTTP 400 past 64 KiB of request headers); `LINK_TEXT_MAX` characters per
text (at most 12 bytes each once percent-encoded) keeps a link with several texts well under it.
A longer text stays out of the link and the page says so (`left_out`).

What it leaves out: Streamlit (components/state.py reads `st.query_params` and shows the notes),
and values whose meaning needs more than a type and a bound (a walk through the next tokens, a
list of temperatures): the page parses those itself, after `Text` has bounded their length.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from playground.errors import PlaygroundError
from playground.options import bounds

LINK_TEXT_MAX = 2_000  # characters of one text a link carries


@dataclass(frozen=True)
class Number:
    """A number between `lo` and `hi`; whole when `integer`."""

    lo: float
    hi: float
    integer: bool = False

    @classmethod
    def of(cls, settings: type, name: str, integer: bool | None = None) -> "Number":
        """The bounds `playground.options` declares for field `name` of dataclass `settings`."""
        b = bounds(settings, name)
        if integer is None:
            default = next(f.default for f in dataclasses.fields(settings) if f.name == name)
            integer = isinstance(default, int) and not isinstance(default, bool)
        return cls(b.lo, b.hi, integer)


@dataclass(frozen=True)
class Choice:
    """One of `options` (compared as text: a link carries text)."""

    options: tuple


@dataclass(frozen=True)
class Flag:
    """True or false."""


@dataclass(frozen=True)
class Text:
    """Free text, at most `max_chars` characters from a link."""

    max_chars: int = LINK_TEXT_MAX


@dataclass(frozen=True)
class Model:
    """A model id `registry.get_model` knows; `need` "generate" or "embed" also checks what it can do.
    `empty_ok`: the empty text is allowed too (a "no second model" choice); `engine`: what the model's
    engine must be able to show (a playground.engines Need such as "attention")."""

    need: Literal["generate", "embed"] | None = None
    empty_ok: bool = False
    engine: str | None = None  # what its engine must show (playground.engines.Need), e.g. "attention"


Spec = Number | Choice | Flag | Text | Model


@dataclass(frozen=True)
class Link:
    """A session value that a page keeps in its link, under query parameter `param`."""

    param: str
    spec: Spec


@dataclass(frozen=True)
class Reading:
    value: Any
    note: str | None = None  # what had to change, in a sentence; None when the link's value is used as it is


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if value else "'' (empty)"
    return str(value)


def _quote(raw: str, limit: int = 60) -> str:
    return repr(raw if len(raw) <= limit else raw[:limit] + "…")


def _number(param: str, raw: str, spec: Number, default: Any) -> Reading:
    kind = "a whole number" if spec.integer else "a number"
    fallback = f"the default {_show(default)} is used"
    try:
        x = float(raw.strip())
    except ValueError:
        return Reading(default, f"The link asked for {param} {_quote(raw)}, which is not {kind}; {fallback}.")
    if not math.isfinite(x):
        return Reading(default, f"The link asked for {param} {_quote(raw)}, which is not {kind}; {fallback}.")
    note = None
    if spec.integer and not x.is_integer():
        note = f"The link asked for {param} {raw.strip()}; it must be {kind}, so {round(x)} is used."
        x = float(round(x))
    lo, hi = spec.lo, spec.hi
    if x > hi:
        used = int(hi) if spec.integer else hi
        return Reading(used, f"The link asked for {param} {raw.strip()}; the most is {used}, so {used} is used.")
    if x < lo:
        used = int(lo) if spec.integer else lo
        return Reading(used, f"The link asked for {param} {raw.strip()}; the least is {used}, so {used} is used.")
    return Reading(int(x) if spec.integer else x, note)


def _model(param: str, raw: str, spec: Model, default: Any) -> Reading:
    from playground.registry import get_model

    value = raw.strip()
    if not value and spec.empty_ok:
        return Reading("")
    fallback = f"the default {_show(default)} is used"
    try:
        model = get_model(value)
    except PlaygroundError as exc:
        return Reading(default, f"The link asked for {param} {_quote(raw)}: {exc} So {fallback}.")
    if spec.need == "generate" and not model.can_generate:
        return Reading(default, f"The link asked for {param} {_quote(raw)}, which cannot generate text; {fallback}.")
    if spec.need == "embed" and not model.can_embed:
        return Reading(default, f"The link asked for {param} {_quote(raw)}, which is not an embedding model; {fallback}.")
    if spec.engine is not None:
        from playground.engines import why_not

        reason = why_not(model, spec.engine)
        if reason:
            return Reading(default, f"The link asked for {param} {_quote(raw)}: {reason.rstrip('.')}. So {fallback}.")
    return Reading(model.id)


def read(param: str, raw: Any, spec: Spec, default: Any) -> Reading:
    """The value a link's `raw` text gives for `spec`, or `default` with a note saying why not."""
    if isinstance(raw, (list, tuple)):  # a parameter given twice: the last one counts, as in a browser
        raw = raw[-1] if raw else ""
    raw = "" if raw is None else str(raw)
    if isinstance(spec, Number):
        return _number(param, raw, spec, default)
    if isinstance(spec, Flag):
        word = raw.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return Reading(True)
        if word in ("0", "false", "no", "off"):
            return Reading(False)
        return Reading(default, f"The link asked for {param} {_quote(raw)}, which is neither true nor false; "
                                f"the default {_show(default)} is used.")
    if isinstance(spec, Choice):
        for option in spec.options:
            if str(option) == raw:
                return Reading(option)
        shown = ", ".join(str(o) for o in spec.options[:12]) + (", …" if len(spec.options) > 12 else "")
        return Reading(default, f"The link asked for {param} {_quote(raw)}; the choices are {shown}, "
                                f"so the default {default} is used.")
    if isinstance(spec, Text):
        if len(raw) > spec.max_chars:
            return Reading(raw[:spec.max_chars], f"The link's {param} is {len(raw):,} characters; a link carries at "
                                                 f"most {spec.max_chars:,}, so its first {spec.max_chars:,} are used.")
        return Reading(raw)
    if isinstance(spec, Model):
        return _model(param, raw, spec, default)
    raise TypeError(f"not a link spec: {spec!r}")


def fits(value: Any, spec: Spec) -> bool:
    """Whether `value` can go into a link (only a `Text` can be too long)."""
    return not (isinstance(spec, Text) and isinstance(value, str) and len(value) > spec.max_chars)


def left_out(param: str, value: str, spec: Text) -> str:
    """The sentence a page shows when a text is too long for its link.

    >>> left_out("prompt", "x" * 200_000, Text())
    'The prompt is 200,000 characters, more than a link carries (2,000): it is left out of the link, which opens with the default prompt. Everything else is in the link.'
    """
    return (f"The {param} is {len(value):,} characters, more than a link carries ({spec.max_chars:,}): it is left "
            f"out of the link, which opens with the default {param}. Everything else is in the link.")


def as_text(value: Any) -> str:
    """How a value is written into a link: true / false for flags, str() otherwise."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def choices(options: Sequence) -> Choice:
    return Choice(tuple(options))
