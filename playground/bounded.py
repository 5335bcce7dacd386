"""Running what a person wrote within a time and size bound, in the calling thread.

Prompt templates are programs: a jinja2 template can loop ``{% for i in range(100000) %}``
inside another such loop (10^10 steps, even with an empty body that writes nothing), and a
mustache template can nest sections over a list. Rendered on a Streamlit script thread, such a
template would run for hours on every rerun. This module bounds it:

- `time_limit(seconds, what)`: a context manager that installs a trace function on the
  current thread only (`sys.settrace`). It checks the clock on every Python call, and on every
  line of a template's own compiled code (jinja2's ``<template>`` module, chevron's renderer),
  so an empty loop body is counted too; past the deadline it raises `LimitError`. Other
  threads (other sessions) are not traced and keep running: the traced thread gives up the
  GIL every few milliseconds like any Python loop, and for at most `seconds`.
- `BoundedSandbox`: jinja2's `SandboxedEnvironment` (which already caps ``range`` at 100,000
  items and blocks Python internals) with bounds on what a single operation can allocate:
  ``*``, ``**`` and ``+`` on numbers, strings and lists, an integer argument to any call or
  filter (``center(10**9)``, ``'%0999999999d'|format(1)``), and the length of every
  filter's or call's result and of every ``~`` concatenation; `render_jinja2` renders with it
  and stops once the output passes its size bound.

The bounds are declared in playground.limits (RENDER_SECONDS, RENDER_CHARS, TEMPLATE_NUMBER).

What it leaves out: a memory limit for the process (one operation can still allocate up to
about ten times RENDER_CHARS before its result is measured), and code that is not Python:
a single C call that runs long (none of the bounded operations can) is not interrupted.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

from playground.limits import RENDER_CHARS, RENDER_SECONDS, TEMPLATE_NUMBER, LimitError, TimeLimitError

_TRACED_FILES = ("<template>", "chevron", "mustache")  # code whose every line is counted


class _Timeout(BaseException):
    """Raised inside the traced code; a BaseException so that no `except Exception` there swallows it."""


@contextmanager
def time_limit(seconds: float = RENDER_SECONDS.value, what: str = "Filling in the template") -> Iterator[None]:
    """Raise LimitError when the block runs longer than `seconds` (see the module docstring)."""
    deadline = time.monotonic() + seconds
    previous = sys.gettrace()
    steps = 0

    def on_line(frame, event, arg):  # the local tracer of template code: every line, every loop turn
        nonlocal steps
        steps += 1
        if not steps & 127 and time.monotonic() > deadline:
            raise _Timeout
        return on_line

    def on_call(frame, event, arg):
        if time.monotonic() > deadline:
            raise _Timeout
        name = frame.f_code.co_filename
        return on_line if any(t in name for t in _TRACED_FILES) else None

    sys.settrace(on_call)
    try:
        yield
    except _Timeout:
        raise TimeLimitError(f"{what} took more than {seconds:g} seconds and was stopped: the template loops too much "
                         f"(a loop inside a loop?). Templates have {RENDER_SECONDS.text} to render.") from None
    finally:
        sys.settrace(previous)


def _too_big(n: int, what: str) -> LimitError:
    return LimitError(f"{what} would be {n:,} characters or items; a template's output is {RENDER_CHARS.text}. "
                      "Make the template produce less.")


def _sized(value: Any, what: str) -> Any:
    if isinstance(value, (str, list, tuple, bytes)) and len(value) > RENDER_CHARS.value:
        raise _too_big(len(value), what)
    return value


def _check_number(x: Any, what: str) -> None:
    if isinstance(x, int) and not isinstance(x, bool) and abs(x) > TEMPLATE_NUMBER.value:
        raise LimitError(f"{what} is given {x:,}; numbers in a template's calls and filters are at most "
                         f"{TEMPLATE_NUMBER.value:,}. Use a smaller number.")


_FORMAT_FIELD = re.compile(r"\{[^{}]*\}|%[-#0 +]*[\d.*]*[a-zA-Z%]")


def _check_format_string(fmt: Any, what: str) -> None:
    """'{:>999999999}' and '%0999999999d' allocate their width: refuse a width or precision above the bound."""
    if not isinstance(fmt, str):
        return
    for spec in _FORMAT_FIELD.findall(fmt):
        for digits in re.findall(r"\d+", spec):
            if len(digits) > 7 or int(digits) > TEMPLATE_NUMBER.value:
                raise LimitError(f"{what} asks for a width of {int(digits):,}; widths in a template are at most "
                                 f"{TEMPLATE_NUMBER.value:,}.")


def _guard_filter(name: str, f):
    @functools.wraps(f)  # keeps jinja2's pass_context / pass_environment marks
    def guarded(*args, **kwargs):
        for a in (*args[1:], *kwargs.values()):
            _check_number(a, f"The filter '{name}'")
        if name == "format":
            for a in args[:2]:
                _check_format_string(a, f"The filter '{name}'")
        if name == "replace":
            strs = [a for a in args if isinstance(a, str)]
            if len(strs) >= 3:
                value, new = strs[-3], strs[-1]
                if len(value) * max(1, len(new)) > 10 * RENDER_CHARS.value:
                    raise _too_big(len(value) * len(new), f"The filter '{name}'")
        return _sized(f(*args, **kwargs), f"The result of the filter '{name}'")

    return guarded


def _bounded_join(pieces) -> str:
    total = 0
    parts = []
    for p in pieces:
        s = p if isinstance(p, str) else str(p)
        total += len(s)
        if total > RENDER_CHARS.value:
            raise _too_big(total, "Joining text with ~")
        parts.append(s)
    return "".join(parts)


class BoundedSandbox(SandboxedEnvironment):
    """jinja2's sandbox with bounds on what one operation can allocate (see the module docstring)."""

    intercepted_binops = frozenset(["*", "**", "+", "%"])  # also keeps the compiler from folding them early

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            for x in (left, right):
                _check_number(x, "The power operator **")
            if isinstance(right, int) and isinstance(left, (int, float)) and abs(left) > 1 and right > 64:
                raise LimitError(f"{left} ** {right} is too large a number for a template; exponents above 64 "
                                 "are refused.")
        if operator == "*":
            seq, n = (left, right) if isinstance(left, (str, list, tuple)) else (right, left)
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                if len(seq) * n > RENDER_CHARS.value:
                    raise _too_big(len(seq) * n, "Repeating with *")
            elif all(isinstance(x, int) for x in (left, right)) and abs(left) * abs(right) > 10**18:
                raise LimitError(f"{left:,} * {right:,} is too large a number for a template.")
        if operator == "%" and isinstance(left, str):
            _check_format_string(left, "The operator %")
        if operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, type(left)):
            if len(left) + len(right) > RENDER_CHARS.value:
                raise _too_big(len(left) + len(right), "Adding with +")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja2's own signature
        what = f"The call {getattr(__obj, '__name__', type(__obj).__name__)}()"
        for a in (*args, *kwargs.values()):
            _check_number(a, what)
        if getattr(__obj, "__name__", "") == "replace" and isinstance(getattr(__obj, "__self__", None), str):
            new = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            if len(__obj.__self__) * max(1, len(new)) > 10 * RENDER_CHARS.value:
                raise _too_big(len(__obj.__self__) * len(new), what)
        return _sized(super().call(__context, __obj, *args, **kwargs), f"The result of {what}")

    def wrap_str_format(self, value: Any):  # str.format / format_map, however they are reached
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        _check_format_string(value.__self__, f"str.{value.__name__}")

        @functools.wraps(wrapped)
        def bounded(*args: Any, **kwargs: Any) -> str:
            for a in (*args, *kwargs.values()):
                _check_number(a, f"str.{value.__name__}")
            return _sized(wrapped(*args, **kwargs), f"The result of str.{value.__name__}")

        return bounded

    def from_string(self, source, globals=None, template_class=None):  # noqa: A002 - jinja2's own signature
        t = super().from_string(source, globals, template_class)
        namespace = t.root_render_func.__globals__
        if "str_join" in namespace:  # what ~ compiles to
            namespace["str_join"] = _bounded_join
        if "markup_join" in namespace:  # ~ when autoescaping
            original = namespace["markup_join"]

            def markup_join(seq, _original=original):
                items = list(seq)
                _bounded_join(str(x) for x in items)
                return _original(items)

            namespace["markup_join"] = markup_join
        return t


_ENV: BoundedSandbox | None = None


def environment() -> BoundedSandbox:
    """The one bounded jinja2 environment (it holds no per-render state, so threads may share it)."""
    global _ENV
    if _ENV is None:
        _ENV = BoundedSandbox()
    return _ENV


@functools.lru_cache(maxsize=256)
def _compiled(source: str):
    """A compiled template, kept: compiling costs milliseconds, and a jinja2 Template renders safely
    from several threads at once (all its state is in the render's own context)."""
    return environment().from_string(source)


def render_jinja2(source: str, values: Mapping[str, Any], what: str = "The template") -> str:
    """Render a jinja2 template in the bounded sandbox; LimitError past RENDER_CHARS of output.

    The caller holds the time limit (`time_limit`), so one limit covers a system message and a
    template together.
    """
    template = _compiled(source)
    out: list[str] = []
    total = 0
    for piece in template.generate(**values):
        total += len(piece)
        if total > RENDER_CHARS.value:
            raise LimitError(f"{what} gives more than {RENDER_CHARS.value:,} characters (stopped at {total:,}); a "
                             f"template's output is {RENDER_CHARS.text}. Make it produce less.")
        out.append(piece)
    return "".join(out)
