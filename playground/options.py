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
