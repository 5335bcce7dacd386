"""Options declared once, with their bounds and descriptions.

A settings dataclass declares each numeric field with `option(default, lo, hi, help)`;
a page builds its sliders from `bounds(cls, name)` and the core calls `validate(obj)`
with the same bounds, so the two can never disagree.

>>> from dataclasses import dataclass
>>> @dataclass
... class S:
...     temperature: float = option(1.0, 0.0, 2.0, "Softmax temperature")
>>> validate(S(temperature=3.0))
Traceback (most recent call last):
...
playground.errors.InputError: temperature is 3.0; it must be between 0.0 and 2.0 (Softmax temperature).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from playground.errors import InputError


@dataclass(frozen=True)
class Bounds:
    lo: float
    hi: float
    step: float | None
    help: str


def option(default: Any, lo: float, hi: float, help: str, step: float | None = None) -> Any:
    """A dataclass field with bounds and a description kept in its metadata."""
    return field(default=default, metadata={"bounds": Bounds(lo, hi, step, help)})


# Generation options that more than one settings class has (GenerationSettings, SamplingSettings),
# declared once: `shared("temperature", 1.0)` is the field with these bounds and that default.
# 2.0 is the most temperature an OpenAI-compatible server accepts, and past it a small model's text is noise.
SHARED: dict[str, Bounds] = {
    "temperature": Bounds(0.0, 2.0, 0.05, "0 is greedy (deterministic); below 1 sharpens, above 1 flattens"),
    "top_k": Bounds(0, 1_000_000, 1, "keep the k most likely tokens; 0 keeps all"),
    "top_p": Bounds(0.01, 1.0, 0.01, "nucleus sampling: keep the smallest set whose mass reaches p; 1 keeps all"),
    "min_p": Bounds(0.0, 1.0, 0.01, "drop tokens below min_p x the top token's probability; 0 keeps all"),
    "seed": Bounds(0, 2**31 - 1, 1, "random seed, so a sampled draw can be reproduced"),
}


def shared(name: str, default: Any) -> Any:
    """The dataclass field of shared option `name` (see SHARED) with `default`.

    >>> @dataclass
    ... class G:
    ...     temperature: float = shared("temperature", 0.0)
    >>> bounds(G, "temperature").hi
    2.0
    """
    b = SHARED[name]
    return option(default, b.lo, b.hi, b.help, b.step)


def bounds(cls: type, name: str) -> Bounds:
    """The declared bounds of field `name` of dataclass `cls`."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata["bounds"]
    raise KeyError(name)


def validate(obj: Any) -> Any:
    """Check every bounded field of `obj`; return `obj` or raise InputError naming the value."""
    for f in dataclasses.fields(obj):
        b = f.metadata.get("bounds")
        if b is None:
            continue
        value = getattr(obj, f.name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise InputError(f"{f.name} is {value!r}; it must be a number ({b.help}).")
        if not (b.lo <= value <= b.hi):
            raise InputError(f"{f.name} is {value}; it must be between {b.lo} and {b.hi} ({b.help}).")
    return obj


def check_text(value: str, max_chars: int, what: str) -> str:
    """`value` if it has at most `max_chars` characters; InputError with both numbers otherwise.

    >>> check_text("x" * 1200, 1000, "The question")
    Traceback (most recent call last):
    ...
    playground.errors.InputError: The question is 1,200 characters; at most 1,000 are accepted. Shorten it.
    """
    if isinstance(value, str) and len(value) > max_chars:
        raise InputError(f"{what} is {len(value):,} characters; at most {max_chars:,} are accepted. Shorten it.")
    return value
