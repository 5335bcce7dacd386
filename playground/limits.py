"""Bounds on the work a person's input makes the server do, declared once.

Everything a person writes that the server runs or parses is bounded in time and size: an
uploaded file (bytes, rows, columns, JSON nesting), a prompt template (length, rendering
time, rendered size), a regex check (pattern length, the engine's memory), and every text
box (characters). Each bound is a `Limit` here, so a page states it (`limit.text`) and the
core refuses past it with the numbers (`limit.check(n, what)`):

>>> TEMPLATE_CHARS.text
'at most 20,000 characters'
>>> TEMPLATE_CHARS.check(25_000, "Template A")
Traceback (most recent call last):
...
playground.limits.LimitError: Template A is 25,000 characters; at most 20,000 characters are allowed (a prompt template). Shorten it.

What it leaves out: enforcing them. The parsers (playground.uploads, playground.experiments.inputs),
the template renderer (playground.prompts, with playground.bounded) and the regex check
(playground.experiments.checks) do that where the work happens.
"""

from __future__ import annotations

from dataclasses import dataclass

from playground.errors import InputError


class LimitError(InputError):
    """A bound on the work an input makes the server do (time, size, nesting) was hit."""


class TimeLimitError(LimitError):
    """Work on an input ran past its time bound and was stopped."""


@dataclass(frozen=True)
class Limit:
    """A bound: its value, the unit it counts, and what it bounds."""

    value: int | float
    unit: str
    help: str

    @property
    def text(self) -> str:
        """'at most 20,000 characters' (for a page's caption or help)."""
        return f"at most {_num(self.value)} {self.unit}"

    def check(self, n: int | float, what: str, advice: str = "Shorten it.") -> None:
        """InputError when n is above the bound: '<what> is <n> <unit>; at most <value> ... (help). <advice>'."""
        if n > self.value:
            raise LimitError(f"{what} is {_num(n)} {self.unit}; at most {_num(self.value)} {self.unit} are allowed "
                             f"({self.help}). {advice}")


def _num(x: int | float) -> str:
    if isinstance(x, float) and not x.is_integer():
        return f"{x:,.1f}"
    return f"{int(x):,}"


# --- uploads ------------------------------------------------------------------------------------
UPLOAD_BYTES = Limit(5 * 1024 * 1024, "bytes", "an uploaded text file")  # 5.0 MB as Streamlit counts
UPLOAD_COLUMNS = Limit(50, "columns", "columns of an uploaded table")
JSON_DEPTH = Limit(32, "levels of nesting", "JSON arrays and objects inside each other")

# --- templates ----------------------------------------------------------------------------------
TEMPLATE_CHARS = Limit(20_000, "characters", "a prompt template")
SYSTEM_CHARS = Limit(10_000, "characters", "a system message")
RENDER_SECONDS = Limit(2.0, "seconds", "filling in one template")
RENDER_CHARS = Limit(200_000, "characters", "what one template gives for one row")
TEMPLATE_NUMBER = Limit(1_000_000, "as a number", "a number a template computes or passes to a filter")

# --- checks -------------------------------------------------------------------------------------
REGEX_CHARS = Limit(500, "characters", "a regex or text a check looks for")
REGEX_MEMORY = 8 << 20  # bytes RE2 may use for one compiled pattern; a larger one is refused when compiled

# --- text boxes on the pages --------------------------------------------------------------------
NAME_CHARS = Limit(200, "characters", "a name")
PASTE_CHARS = Limit(1_000_000, "characters", "pasted rows")
CELL_CHARS = Limit(20_000, "characters", "one value of an input row")
RUBRIC_CHARS = Limit(4_000, "characters", "the judge's rubric")

# --- constrained decoding -----------------------------------------------------------------------
SCHEMA_CHARS = Limit(20_000, "characters", "a JSON schema that constrains an answer")
CONSTRAINT_CHOICES = Limit(50, "choices", "the choices an answer is limited to")
CHOICE_CHARS = Limit(200, "characters", "one choice of a constraint")
CONSTRAINT_TOKENS = Limit(2_048, "tokens", "a constrained answer, its end included")
