"""The domain model of an A/B experiment: its rows, settings, arms, cells, votes, verdicts.

An `Experiment` holds 2-4 `PromptVariant`s, the input rows (`InputRow`: values for the
templates' variables, optionally a reference answer), the `RunSettings` (one or two models,
generation settings) and the checks. Its columns are *arms* (`Arm`): a variant on a model
("A" on SmolLM2). A `Cell` is one output; a `Vote` a person's choice between two arms on a
row; a `JudgeVerdict` a judge's two answers (both orders) on a row, combined by `combine` so
that a judge that always prefers one position scores a tie.

The size rules live here too: at most MAX_ROWS (1,000) rows per experiment, 2-4 templates,
one or two models.

What it leaves out: running (runner), scoring (checks), storing (store), and statistics
(stats); this module only holds and validates the data.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from playground.errors import InputError
from playground.generate import GenerationSettings
from playground.limits import NAME_CHARS, RUBRIC_CHARS
from playground.options import validate
from playground.prompts import PromptVariant, all_variables, check_columns
from playground.registry import DEFAULT_CHAT_MODEL

if TYPE_CHECKING:
    from playground.experiments.checks import Check

MAX_ROWS = 1000
CONFIRM_CELLS = 60
MIN_VARIANTS, MAX_VARIANTS = 2, 4
MAX_MODELS = 2
VARIANT_NAMES = ("A", "B", "C", "D")
VOTE_CHOICES = ("A", "B", "tie", "both bad")
DEFAULT_RUBRIC = (
    "Prefer the response that answers the task correctly and completely, follows the instructions "
    "in the input, and is concise. A response that makes things up, repeats itself, or does not "
    "answer is worse."
)


@dataclass(frozen=True)
class InputRow:
    """One input: a value for each template variable, and the reference answer if there is one."""

    values: Mapping[str, Any]
    reference: str | None = None


@dataclass(frozen=True)
class RunSettings:
    """The models (one or two) and generation settings every cell of a run uses."""

    model_ids: tuple[str, ...] = (DEFAULT_CHAT_MODEL,)
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=24))
    use_chat_template: bool = True

    def validate(self) -> RunSettings:
        if not 1 <= len(self.model_ids) <= MAX_MODELS:
            raise InputError(f"Pick one or two models for a run (got {len(self.model_ids)}).")
        if len(set(self.model_ids)) != len(self.model_ids):
            raise InputError(f"The same model is picked twice ({', '.join(self.model_ids)}).")
        validate(self.generation)
        return self


@dataclass(frozen=True)
class Arm:
    """A column of the grid: one variant on one model."""

    variant: str
    model_id: str

    @property
    def key(self) -> str:
        return f"{self.variant}@{self.model_id}"

    def label(self, several_models: bool) -> str:
        return f"{self.variant} · {self.model_id}" if several_models else self.variant


@dataclass
class Cell:
    """One output: a variant on one row with one model, with its cost and its scores."""

    row: int
    variant: str
    model_id: str
    output: str = ""
    system: str | None = None  # the rendered system message
    user: str = ""  # the rendered template
    prompt: str = ""  # the exact text the model received (chat template applied)
    new_tokens: int = 0
    prompt_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float = 0.0
    finish_reason: str = ""
    error: str | None = None
    checks: tuple[bool, ...] = ()
    exact: float | None = None
    f1: float | None = None
    cosine: float | None = None
    created: float = 0.0
    # Kept in memory for the session that generated the cell, never saved (the store writes its columns):
    # each token's probability and alternatives, and how the Next token page reopens its prefixes.
    logprobs: tuple = field(default=(), compare=False, repr=False)
    token_ids: tuple[int, ...] = field(default=(), compare=False, repr=False)
    origin: Any = field(default=None, compare=False, repr=False)

    @property
    def arm(self) -> Arm:
        return Arm(self.variant, self.model_id)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Vote:
    """A person's vote on one row: which of the two outputs shown as A and B is better."""

    row: int
    a: Arm
    b: Arm
    choice: str  # "A" | "B" | "tie" | "both bad"
    blind: bool = True
    created: float = 0.0
    voter: str = ""  # who voted: the page's id for one browser session; "" from a notebook

    @property
    def winner(self) -> Arm | None:
        return {"A": self.a, "B": self.b}.get(self.choice)


@dataclass(frozen=True)
class RawVerdict:
    """One answer of a judge: '1', '2' or 'tie' (which position it prefers) and why."""

    choice: str
    reason: str = ""
    text: str = ""  # the judge's whole answer, as it came


@dataclass(frozen=True)
class JudgeVerdict:
    """A pairwise verdict on one row, asked in both orders: `first` shows x as response 1, `second` shows y."""

    row: int
    x: Arm
    y: Arm
    judge_model: str
    first: RawVerdict
    second: RawVerdict
    created: float = 0.0

    @property
    def outcome(self) -> str:
        """'x', 'y' or 'tie' after cancelling position bias (see `combine`)."""
        return combine(self.first.choice, self.second.choice)

    @property
    def winner(self) -> Arm | None:
        return {"x": self.x, "y": self.y}.get(self.outcome)

    @property
    def consistent(self) -> bool:
        """Both orders name the same side (or both say tie)."""
        return _side(self.first.choice, swapped=False) == _side(self.second.choice, swapped=True)

    @property
    def reason(self) -> str:
        return f"x first: {self.first.reason} | y first: {self.second.reason}"


def _side(choice: str, swapped: bool) -> str:
    """Which arm a position choice means: in the first order response 1 is x, in the swapped order it is y."""
    if choice == "1":
        return "y" if swapped else "x"
    if choice == "2":
        return "x" if swapped else "y"
    return "tie"


def combine(first: str, second: str) -> str:
    """Combine the two orders: 'x' or 'y' only when both orders prefer it; otherwise 'tie'.

    first: the judge's choice with x shown as response 1; second: with y shown as response 1.
    A judge that always answers '1' (or always '2') is following position, not content: tie.

    >>> combine("1", "2"), combine("2", "1"), combine("1", "1"), combine("1", "tie")
    ('x', 'y', 'tie', 'tie')
    """
    a, b = _side(first, swapped=False), _side(second, swapped=True)
    return a if a == b else "tie"


@dataclass
class Experiment:
    """Templates, inputs, settings, checks and rubric, and everything a run produced."""

    name: str
    variants: tuple[PromptVariant, ...]
    rows: tuple[InputRow, ...]
    settings: RunSettings = field(default_factory=RunSettings)
    checks: tuple[Check, ...] = ()
    rubric: str = DEFAULT_RUBRIC
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    parent_id: str | None = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    cells: dict[tuple[int, str, str], Cell] = field(default_factory=dict)
    votes: dict[tuple[int, str, str], Vote] = field(default_factory=dict)  # (row, pair key, voter) -> vote
    verdicts: dict[tuple[int, str, str], JudgeVerdict] = field(default_factory=dict)  # (row, pair, judge)

    @property
    def arms(self) -> tuple[Arm, ...]:
        return tuple(Arm(v.name, m) for m in self.settings.model_ids for v in self.variants)

    @property
    def several_models(self) -> bool:
        return len(self.settings.model_ids) > 1

    @property
    def variables(self) -> tuple[str, ...]:
        return all_variables(self.variants)

    @property
    def columns(self) -> tuple[str, ...]:
        """The input columns: the variables of the rows (== the templates' once validated)."""
        cols: dict[str, None] = {}
        for r in self.rows:
            for k in r.values:
                cols[k] = None
        return tuple(cols) if cols else self.variables

    @property
    def has_reference(self) -> bool:
        return any(r.reference for r in self.rows)

    def variant(self, name: str) -> PromptVariant:
        for v in self.variants:
            if v.name == name:
                return v
        raise InputError(f"No template named {name!r} in {self.name} (it has {', '.join(v.name for v in self.variants)}).")

    def cell(self, row: int, arm: Arm) -> Cell | None:
        return self.cells.get((row, arm.variant, arm.model_id))

    def pending(self) -> list[tuple[int, Arm]]:
        """Cells still to generate (missing or failed), in run order: model, row, variant."""
        out = []
        for m in self.settings.model_ids:
            for i in range(len(self.rows)):
                for v in self.variants:
                    c = self.cells.get((i, v.name, m))
                    if c is None or not c.ok:
                        out.append((i, Arm(v.name, m)))
        return out

    def pairs(self) -> list[tuple[Arm, Arm]]:
        return list(itertools.combinations(self.arms, 2))

    def arm_label(self, arm: Arm) -> str:
        return arm.label(self.several_models)

    def validate(self) -> Experiment:
        """Every problem that would stop a run, found before it starts."""
        if not self.name.strip():
            raise InputError("The experiment needs a name.")
        NAME_CHARS.check(len(self.name), "The experiment's name")
        RUBRIC_CHARS.check(len(self.rubric), "The judge's rubric")
        if not MIN_VARIANTS <= len(self.variants) <= MAX_VARIANTS:
            raise InputError(f"An experiment compares {MIN_VARIANTS} to {MAX_VARIANTS} templates (got {len(self.variants)}).")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise InputError(f"Two templates share a name ({', '.join(names)}).")
        for v in self.variants:
            v.variables  # noqa: B018 - raises TemplateError for an invalid template
        if not self.rows:
            raise InputError("There are no input rows: add at least one row to run the templates on.")
        if len(self.rows) > MAX_ROWS:
            raise InputError(f"{len(self.rows):,} rows; an experiment holds at most {MAX_ROWS:,}.")
        check_columns(self.variants, self.columns)
        self.settings.validate()
        for c in self.checks:
            c.validate()
        return self

    def spec(self) -> dict:
        """What decides the outputs: templates, rows, settings. Two experiments with the same spec
        produce the same cells (greedy decoding, or the same seed)."""
        return {"variants": [_variant_dict(v) for v in self.variants], "rows": [_row_dict(r) for r in self.rows],
                "settings": _settings_dict(self.settings)}


# --- serialisation (what `spec` compares and the store writes) ------------------------------

def _variant_dict(v: PromptVariant) -> dict:
    return {"name": v.name, "template": v.template, "system": v.system, "format": v.format}


def _row_dict(r: InputRow) -> dict:
    return {"values": dict(r.values), "reference": r.reference}


def _settings_dict(s: RunSettings) -> dict:
    g = dataclasses.asdict(s.generation)
    g["stop"] = list(g["stop"])
    return {"model_ids": list(s.model_ids), "generation": g, "use_chat_template": s.use_chat_template}


def _settings_from(d: Mapping) -> RunSettings:
    g = dict(d["generation"])
    g["stop"] = tuple(g.get("stop", ()))
    known = {f.name for f in dataclasses.fields(GenerationSettings)}
    return RunSettings(tuple(d["model_ids"]), GenerationSettings(**{k: v for k, v in g.items() if k in known}),
                       bool(d.get("use_chat_template", True)))
