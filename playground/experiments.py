"""A/B experiments on prompt templates: run every variant on every input row, score, judge, vote, save.

An `Experiment` holds 2-4 `PromptVariant`s, the input rows (values for the templates'
variables, optionally a reference answer), the `RunSettings` (one or two models, generation
settings) and the checks. Its columns are *arms*: a variant on a model ("A" on SmolLM2).

- `run(exp, store, ...)` fills every missing cell (row x arm), model by model, row by row,
  saving each finished cell the moment it is done (and writing the whole experiment back if
  its database file was deleted or replaced meanwhile): if the model fails halfway, the run stops
  with a message and every finished cell is already in the database; running again fills in
  only what is missing. A row the model cannot take (a prompt longer than its context) gets
  an error cell and the run goes on.
- Checks (`Check`): contains, does not contain, regex, valid JSON, length bounds.
- Scores against a reference: exact match and token-overlap F1 (both after SQuAD-style
  normalisation: lower case, no punctuation, no articles), cosine similarity of MiniLM
  sentence embeddings.
- A judge (`run_judge`): any callable `(task, response_1, response_2, rubric) -> RawVerdict`,
  asked twice per pair, once in each order; a side wins only when both orders pick it, so a
  judge that always prefers the first position scores a tie (see `combine`). `model_judge`
  makes such a callable from a causal LM and keeps its written reason.
- Human votes (`Vote`): A / B / tie / both bad. In blind mode, which arm shows as "A" is a
  stable pseudo-random choice per (experiment, row, pair) (`blind_swap`).
- `summarize`: per arm, pass rates, mean scores, and win rates with a 95% Wilson score
  interval, ties (and "both bad") counting half a win (see `win_rate`).
- `ExperimentStore`: an embedded SQLite database under `playground.paths.data_root()`:
  experiments with templates, inputs, settings, outputs, scores, votes and verdicts; list,
  load, fork (rerun after editing), delete; `to_csv` / `to_json` export.

Input sets: a table (`rows_from_records`), pasted text (`parse_pasted`), or an uploaded CSV,
TSV, JSON or JSONL file (`parse_upload`), UTF-8 only, with an optional reference column.
The size rule: at most MAX_ROWS (1,000) rows per experiment (more is refused with the
count); a run of more than CONFIRM_CELLS (60) generations must be confirmed (`check_size`).

What it leaves out: rendering (components/experiments.py), the model cache (the page passes
a loader), and significance tests between more than two arms.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import re
import sqlite3
import string
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playground.errors import InputError, PlaygroundError, describe
from playground.generate import GenerationResult, GenerationSettings, stream
from playground.options import validate
from playground.prompts import PromptVariant, RenderedPrompt, all_variables, check_columns
from playground.registry import DEFAULT_CHAT_MODEL

MAX_ROWS = 1000
CONFIRM_CELLS = 60
MIN_VARIANTS, MAX_VARIANTS = 2, 4
MAX_MODELS = 2
VARIANT_NAMES = ("A", "B", "C", "D")
CHECK_KINDS = ("contains", "not contains", "regex", "valid JSON", "length")
LENGTH_UNITS = ("characters", "words")
VOTE_CHOICES = ("A", "B", "tie", "both bad")
Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal
DEFAULT_RUBRIC = (
    "Prefer the response that answers the task correctly and completely, follows the instructions "
    "in the input, and is concise. A response that makes things up, repeats itself, or does not "
    "answer is worse."
)


# --- inputs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputRow:
    """One input: a value for each template variable, and the reference answer if there is one."""

    values: Mapping[str, Any]
    reference: str | None = None


def _clean(value: Any) -> Any:
    """Table cells come as None / NaN when empty: those become ''. Strings are kept as they are."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if type(value).__name__ in ("NAType", "NaTType"):
        return ""
    return value


def rows_from_records(records: Iterable[Mapping[str, Any]], reference_column: str | None = None,
                      name: str = "the inputs") -> tuple[InputRow, ...]:
    """InputRows from dicts (table rows, CSV/JSONL records). Rows whose every cell is empty are dropped.

    `reference_column` (if given, it must exist) holds the reference answers; every other
    column is a variable. More than MAX_ROWS rows is an InputError.
    """
    records = list(records)
    columns: dict[str, None] = {}
    for rec in records:
        if not isinstance(rec, Mapping):
            raise InputError(f"{name}: each row must be a set of named columns, got {type(rec).__name__}.")
        for k in rec:
            columns[str(k)] = None
    if reference_column and reference_column not in columns:
        raise InputError(f"{name} has no column '{reference_column}' for the reference answers "
                         f"(columns: {', '.join(columns) or 'none'}).")
    rows: list[InputRow] = []
    for rec in records:
        cleaned = {str(k): _clean(v) for k, v in rec.items()}
        if all(v == "" for v in cleaned.values()):
            continue
        ref = cleaned.pop(reference_column, "") if reference_column else ""
        values = {c: cleaned.get(c, "") for c in columns if c != reference_column}
        rows.append(InputRow(values, str(ref) if ref != "" else None))
    if len(rows) > MAX_ROWS:
        raise InputError(f"{name} has {len(rows):,} rows; an experiment holds at most {MAX_ROWS:,}. "
                         "Split the set, or keep the rows you need.")
    return tuple(rows)


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        hint = ""
        try:
            data.decode("cp1252")
            hint = " It looks like Windows-1252 (Excel's plain 'CSV')."
        except UnicodeDecodeError:
            pass
        raise InputError(
            f"{name} is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line:,} cannot be read.{hint} "
            "Save it as UTF-8 (in Excel: Save As > 'CSV UTF-8') and upload it again; nothing was changed."
        ) from exc


def parse_csv(data: bytes, name: str = "the file", delimiter: str | None = None) -> list[dict[str, str]]:
    """Records from CSV / TSV bytes (UTF-8, header line first). Errors name the file and line."""
    text = _decode(data, name)
    if "\x00" in text:
        raise InputError(f"{name} holds NUL bytes: it is not a text CSV file.")
    if not text.strip():
        raise InputError(f"{name} is empty.")
    if delimiter is None:
        first = text.splitlines()[0]
        delimiter = "\t" if first.count("\t") > first.count(",") else (";" if first.count(";") > first.count(",") else ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
        header = [h.strip() for h in header]
        if any(h == "" for h in header):
            raise InputError(f"{name}: the header line has an empty column name ({delimiter.join(header)!r}).")
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise InputError(f"{name}: the header names {', '.join(dupes)} more than once.")
        records = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                raise InputError(f"{name}, line {reader.line_num:,}: {len(row)} fields, but the header has "
                                 f"{len(header)} ({', '.join(header)}). Quote values that contain '{delimiter}'.")
            records.append({h: (row[i] if i < len(row) else "") for i, h in enumerate(header)})
    except csv.Error as exc:
        raise InputError(f"{name} is not a readable CSV file (line {reader.line_num:,}): {exc}.") from exc
    return records


def parse_jsonl(data: bytes, name: str = "the file") -> list[dict[str, Any]]:
    """Records from JSON Lines (one object per line) or a JSON array of objects."""
    text = _decode(data, name).strip()
    if not text:
        raise InputError(f"{name} is empty.")
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name} is not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}.") from exc
        numbered = list(enumerate(items, start=1))
        where = "item"
    else:
        numbered = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                numbered.append((i, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise InputError(f"{name}, line {i:,} is not valid JSON: {exc.msg} (column {exc.colno}).") from exc
        where = "line"
    for i, item in numbered:
        if not isinstance(item, dict):
            raise InputError(f"{name}, {where} {i:,}: expected an object like {{\"question\": \"...\"}}, "
                             f"got {type(item).__name__}.")
    return [item for _, item in numbered]


def parse_upload(filename: str, data: bytes) -> list[dict[str, Any]]:
    """Records from an uploaded file, by its extension: .csv, .tsv, .txt (CSV), .jsonl, .json."""
    ext = Path(filename).suffix.lower()
    if ext in (".jsonl", ".ndjson", ".json"):
        return parse_jsonl(data, filename)
    if ext in (".csv", ".txt"):
        return parse_csv(data, filename)
    if ext == ".tsv":
        return parse_csv(data, filename, delimiter="\t")
    raise InputError(f"{filename}: upload a .csv, .tsv, .jsonl or .json file (got '{ext or 'no extension'}').")


def parse_pasted(text: str, variables: Sequence[str]) -> list[dict[str, str]]:
    """Records from pasted text: a table with a header line (tab- or comma-separated) naming the
    columns, or, when the templates have a single variable, one row per line."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InputError("Nothing was pasted: paste one input per line, or a table with a header line.")
    first = lines[0]
    delim = "\t" if "\t" in first else ","
    header = [h.strip() for h in first.split(delim)]
    known = set(variables) | {"reference"}
    if any(h in known for h in header) and (len(header) > 1 or header[0] in variables):
        return parse_csv("\n".join(lines).encode("utf-8"), "the pasted text", delimiter=delim)
    if len(variables) == 1:
        return [{variables[0]: ln.strip()} for ln in lines]
    raise InputError(
        f"The templates use {len(variables)} variables ({', '.join(variables)}): paste a table whose first "
        f"line names the columns, separated by tabs or commas, e.g. '{delim.join(variables)}'."
    )


def check_size(n_rows: int, n_arms: int, confirmed: bool = False) -> int:
    """The number of generations a run makes; an InputError if too many rows, or if it needs confirming."""
    if n_rows > MAX_ROWS:
        raise InputError(f"{n_rows:,} rows; an experiment holds at most {MAX_ROWS:,}. Split the set.")
    cells = n_rows * n_arms
    if cells > CONFIRM_CELLS and not confirmed:
        raise InputError(
            f"This run makes {cells:,} generations ({n_rows:,} rows x {n_arms} columns), more than the "
            f"{CONFIRM_CELLS} that run without asking. Confirm it, or use fewer rows."
        )
    return cells


# --- checks and scores ----------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """An automatic check on each output. kind: contains | not contains | regex | valid JSON | length.

    contains / not contains compare case-insensitively; regex uses re.search; valid JSON
    parses the whole output (a ```json fence around it is allowed); length counts
    characters or words and passes when lo <= length <= hi (either bound may be None).
    """

    kind: str
    value: str = ""
    lo: int | None = None
    hi: int | None = None
    unit: str = "characters"

    @property
    def label(self) -> str:
        if self.kind in ("contains", "not contains"):
            return f"{self.kind} '{self.value}'"
        if self.kind == "regex":
            return f"matches /{self.value}/"
        if self.kind == "length":
            lo = "" if self.lo is None else f"{self.lo} <= "
            hi = "" if self.hi is None else f" <= {self.hi}"
            return f"{lo}{self.unit}{hi}"
        return self.kind

    def validate(self) -> Check:
        if self.kind not in CHECK_KINDS:
            raise InputError(f"Check kind {self.kind!r} is not one of {', '.join(CHECK_KINDS)}.")
        if self.kind in ("contains", "not contains", "regex") and not self.value:
            raise InputError(f"The '{self.kind}' check needs a value to look for.")
        if self.kind == "regex":
            try:
                re.compile(self.value)
            except re.error as exc:
                raise InputError(f"The regex check /{self.value}/ does not compile: {exc}.") from exc
        if self.kind == "length":
            if self.unit not in LENGTH_UNITS:
                raise InputError(f"Length unit {self.unit!r} is not one of {', '.join(LENGTH_UNITS)}.")
            if self.lo is None and self.hi is None:
                raise InputError("The length check needs a minimum, a maximum, or both.")
            if self.lo is not None and self.hi is not None and self.lo > self.hi:
                raise InputError(f"The length check's minimum ({self.lo}) is above its maximum ({self.hi}).")
        return self

    def __call__(self, output: str) -> bool:
        if self.kind == "contains":
            return self.value.casefold() in output.casefold()
        if self.kind == "not contains":
            return self.value.casefold() not in output.casefold()
        if self.kind == "regex":
            return re.search(self.value, output) is not None
        if self.kind == "valid JSON":
            text = output.strip()
            fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.S)
            if fenced:
                text = fenced.group(1)
            try:
                json.loads(text)
            except (json.JSONDecodeError, ValueError):
                return False
            return True
        if self.kind == "length":
            n = len(output) if self.unit == "characters" else len(output.split())
            return (self.lo is None or n >= self.lo) and (self.hi is None or n <= self.hi)
        raise InputError(f"Check kind {self.kind!r} is not one of {', '.join(CHECK_KINDS)}.")


def run_checks(checks: Sequence[Check], output: str) -> tuple[bool, ...]:
    return tuple(c(output) for c in checks)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(output: str, reference: str) -> float:
    return float(normalize_answer(output) == normalize_answer(reference))


def token_f1(output: str, reference: str) -> float:
    """Token-overlap F1 (SQuAD): harmonic mean of precision and recall of shared normalised tokens."""
    pred, ref = normalize_answer(output).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def embedding_similarity(embedder, output: str, reference: str) -> float:
    """Cosine similarity of two sentence embeddings (a sentence-transformers model, e.g. MiniLM)."""
    vecs = embedder.encode([output, reference], normalize_embeddings=True, convert_to_numpy=True)  # (2, dims)
    return float((vecs[0] * vecs[1]).sum())


# --- the experiment ---------------------------------------------------------------------------

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
    votes: dict[tuple[int, str], Vote] = field(default_factory=dict)  # (row, pair key) -> vote
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


# --- rendering and running --------------------------------------------------------------------

def render_cell(exp: Experiment, row: int, variant: str) -> RenderedPrompt:
    """The prompt a variant gives for a row (only the variables the variant uses are passed)."""
    v = exp.variant(variant)
    values = exp.rows[row].values
    return v.render({k: values[k] for k in v.variables if k in values})


Generator = Callable[..., GenerationResult]


def _stream_generate(lm, text: str, settings: GenerationSettings, use_chat_template: bool, system: str | None,
                     on_text: Callable[[str], None] | None = None) -> GenerationResult:
    s = stream(lm, text, settings, use_chat_template=use_chat_template, system=system)
    so_far = ""
    finished = False
    try:
        for chunk in s:
            so_far += chunk.text
            if on_text is not None:
                on_text(so_far)
        finished = True
    finally:
        if not finished:  # interrupted (the page reran, the user stopped): let the worker thread end
            s.cancel()
    assert s.result is not None
    return s.result


@dataclass(frozen=True)
class RunReport:
    """What a run did: cells generated now, cells that ended in an error, cells already there."""

    generated: int
    failed: int
    skipped: int
    seconds: float


def score_cell(exp: Experiment, cell: Cell, embedder=None) -> Cell:
    """Fill a cell's checks and (with a reference) its reference scores. Returns the same cell."""
    cell.checks = run_checks(exp.checks, cell.output) if cell.ok else ()
    ref = exp.rows[cell.row].reference
    if cell.ok and ref:
        cell.exact = exact_match(cell.output, ref)
        cell.f1 = token_f1(cell.output, ref)
        cell.cosine = embedding_similarity(embedder, cell.output, ref) if embedder is not None else None
    else:
        cell.exact = cell.f1 = cell.cosine = None
    return cell


def run(exp: Experiment, store: ExperimentStore | None, load_model: Callable[[str], Any], *, embedder=None,
        on_cell: Callable[[Cell, int, int], None] | None = None,
        on_text: Callable[[int, Arm, str], None] | None = None,
        generator: Generator | None = None, confirmed: bool = False) -> RunReport:
    """Generate every pending cell of `exp`, saving each one to `store` as soon as it is finished.

    load_model(model_id) -> LoadedModel (the page passes its cache). on_cell(cell, done, total)
    after each cell; on_text(row, arm, text so far) while one streams. `generator` replaces the
    streaming call (same signature as playground.generate.generate) for scripts and tests.
    A row the model cannot take (InputError: e.g. longer than the context) becomes an error cell
    and the run goes on; any other failure stops the run with a PlaygroundError that says how
    many cells were saved. Running again generates only what is missing or failed.
    """
    exp.validate()
    pending = exp.pending()
    check_size(len(exp.rows), len(exp.arms), confirmed or len(pending) <= CONFIRM_CELLS)
    if store is not None:
        store.save(exp)
    start = time.perf_counter()
    total, done, failed = len(pending), 0, 0
    skipped = len(exp.rows) * len(exp.arms) - total
    models: dict[str, Any] = {}
    for row, arm in pending:
        where = f"row {row + 1}, template {arm.variant}, {arm.model_id}"
        try:
            lm = models.get(arm.model_id)
            if lm is None:
                lm = models[arm.model_id] = load_model(arm.model_id)
            cell = Cell(row, arm.variant, arm.model_id, created=time.time())
            try:
                rendered = render_cell(exp, row, arm.variant)
                cell.system, cell.user = rendered.system, rendered.user
                text, system = rendered.user, rendered.system or None
                if generator is not None:
                    result = generator(lm, text, exp.settings.generation, exp.settings.use_chat_template, system)
                else:
                    cb = (lambda s, _r=row, _a=arm: on_text(_r, _a, s)) if on_text is not None else None
                    result = _stream_generate(lm, text, exp.settings.generation, exp.settings.use_chat_template,
                                              system, cb)
                cell.output, cell.prompt = result.text, result.prompt
                cell.new_tokens, cell.prompt_tokens = result.new_tokens, result.prompt_tokens
                cell.seconds, cell.first_token_seconds = result.total_seconds, result.time_to_first_token
                cell.finish_reason = result.finish_reason
            except InputError as exc:  # this row cannot run on this model (too long, a template error); the others can
                cell.error = describe(exc)
                failed += 1
            score_cell(exp, cell, embedder)
        except Exception as exc:  # noqa: BLE001 - the model (or its loading) failed: stop, keep what is done
            saved = sum(1 for c in exp.cells.values() if c.ok)
            raise PlaygroundError(
                f"The run stopped at {where}: {describe(exc)} The {saved:,} finished cell(s) are saved; "
                f"{total - done:,} remain. Run again to fill them in."
            ) from exc
        exp.cells[(row, arm.variant, arm.model_id)] = cell
        if store is not None:
            try:
                store.save_cell(exp.id, cell)
            except InputError:  # the experiment is gone (its file deleted or replaced mid-run): write back all we hold
                store.create(exp)
        done += 1
        if on_cell is not None:
            on_cell(cell, done, total)
    return RunReport(done - failed, failed, skipped, time.perf_counter() - start)


def rescore(exp: Experiment, embedder=None, store: ExperimentStore | None = None, references: bool = False) -> None:
    """Re-run the checks (and, with references=True, the reference scores) on every cell; save them."""
    for cell in exp.cells.values():
        if references:
            score_cell(exp, cell, embedder)
        else:
            cell.checks = run_checks(exp.checks, cell.output) if cell.ok else ()
    if store is not None:
        store.save_cells(exp.id, exp.cells.values())


def fork(parent: Experiment, *, name: str | None = None, variants: Sequence[PromptVariant] | None = None,
         rows: Sequence[InputRow] | None = None, settings: RunSettings | None = None,
         checks: Sequence[Check] | None = None, rubric: str | None = None) -> tuple[Experiment, int]:
    """A new experiment from `parent` with some parts changed (a rerun after editing a template).

    Cells whose template, row and model are unchanged (and settings identical) are copied,
    with the votes and verdicts whose two cells were both copied. Returns (child, cells reused).
    """
    child = Experiment(
        name=name or parent.name, variants=tuple(variants or parent.variants), rows=tuple(rows or parent.rows),
        settings=settings or parent.settings, checks=tuple(parent.checks if checks is None else checks),
        rubric=parent.rubric if rubric is None else rubric, parent_id=parent.id,
    )
    same_settings = _settings_dict(child.settings)["generation"] == _settings_dict(parent.settings)["generation"] \
        and child.settings.use_chat_template == parent.settings.use_chat_template
    if not same_settings:
        return child, 0
    old_v = {v.name: v for v in parent.variants}
    new_v = {v.name: v for v in child.variants}
    same_variant = {n for n in new_v if n in old_v and new_v[n] == old_v[n]}
    same_row = {i for i in range(min(len(parent.rows), len(child.rows)))
                if _row_dict(parent.rows[i]) == _row_dict(child.rows[i])}
    models = set(child.settings.model_ids)
    reused: set[tuple[int, str, str]] = set()
    for key, cell in parent.cells.items():
        row, variant, model = key
        if cell.ok and row in same_row and variant in same_variant and model in models:
            copy = dataclasses.replace(cell)
            copy.checks = run_checks(child.checks, copy.output)  # same row and reference: the scores stand
            child.cells[key] = copy
            reused.add(key)

    def kept(row: int, arm: Arm) -> bool:
        return (row, arm.variant, arm.model_id) in reused

    for key, vote in parent.votes.items():
        if kept(vote.row, vote.a) and kept(vote.row, vote.b):
            child.votes[key] = vote
    for key, verdict in parent.verdicts.items():
        if kept(verdict.row, verdict.x) and kept(verdict.row, verdict.y):
            child.verdicts[key] = verdict
    return child, len(reused)


# --- votes ------------------------------------------------------------------------------------

def pair_key(x: Arm, y: Arm) -> str:
    return f"{x.key}|{y.key}"


def _canonical(exp: Experiment, p: Arm, q: Arm) -> tuple[Arm, Arm]:
    order = {a: i for i, a in enumerate(exp.arms)}
    return (p, q) if order.get(p, 99) <= order.get(q, 99) else (q, p)


def blind_swap(exp_id: str, row: int, x: Arm, y: Arm) -> bool:
    """Whether, in blind mode, y is shown as "A" on this row: a coin flip fixed by the experiment,
    row and pair (a hash), so the same row always shows the same way, in every session."""
    digest = hashlib.sha256(f"{exp_id}|{row}|{pair_key(x, y)}".encode()).digest()
    return bool(digest[0] & 1)


def shown_pair(exp: Experiment, row: int, x: Arm, y: Arm, blind: bool) -> tuple[Arm, Arm]:
    """(arm shown as A, arm shown as B) for a row: the pair's order, or the blind coin flip."""
    x, y = _canonical(exp, x, y)
    if blind and blind_swap(exp.id, row, x, y):
        return y, x
    return x, y


def vote(exp: Experiment, row: int, a: Arm, b: Arm, choice: str, blind: bool,
         store: ExperimentStore | None = None) -> Vote:
    """Record (or replace) the vote on this row for the pair a, b. choice: A | B | tie | both bad."""
    if choice not in VOTE_CHOICES:
        raise InputError(f"A vote is one of {', '.join(VOTE_CHOICES)} (got {choice!r}).")
    if not 0 <= row < len(exp.rows):
        raise InputError(f"Row {row + 1} does not exist (the experiment has {len(exp.rows)} rows).")
    for arm in (a, b):
        c = exp.cell(row, arm)
        if c is None or not c.ok:
            raise InputError(f"Row {row + 1} has no output for {exp.arm_label(arm)} yet: run the experiment first.")
    v = Vote(row, a, b, choice, blind, time.time())
    exp.votes[(row, pair_key(*_canonical(exp, a, b)))] = v
    if store is not None:
        store.save_vote(exp.id, v, pair_key(*_canonical(exp, a, b)))
    return v


def vote_for(exp: Experiment, row: int, x: Arm, y: Arm) -> Vote | None:
    return exp.votes.get((row, pair_key(*_canonical(exp, x, y))))


# --- the judge --------------------------------------------------------------------------------

JudgeFn = Callable[[str, str, str, str], RawVerdict]

JUDGE_PROMPT = PromptVariant(
    "judge",
    system="You are a strict, impartial judge of answers. You reply with a verdict on the first line and one "
           "short sentence of reasons on the second.",
    template=(
        "Rubric: {rubric}\n\n"
        "Task input:\n{task}\n\n"
        "Response 1:\n{response_1}\n\n"
        "Response 2:\n{response_2}\n\n"
        "Which response is better by the rubric? First line: 1, 2 or tie. Second line: why."
    ),
)


def task_text(exp: Experiment, row: int) -> str:
    """The row as the judge sees it: its inputs, and the reference answer if there is one."""
    r = exp.rows[row]
    lines = [f"{k}: {v}" for k, v in r.values.items()]
    if r.reference:
        lines.append(f"reference answer: {r.reference}")
    return "\n".join(lines)


def parse_verdict(text: str) -> RawVerdict:
    """Read '1', '2' or 'tie' from a judge's answer: first from its first line, else from
    'response 1/2' anywhere; an answer naming neither is a tie. The rest is the reason."""
    stripped = text.strip()
    first, _, rest = stripped.partition("\n")
    m = re.search(r"\b(tie|1|2)\b", first, flags=re.I)
    if m is None:
        m2 = re.search(r"response\s*(1|2)", stripped, flags=re.I)
        choice = m2.group(1) if m2 else "tie"
        reason = stripped
    else:
        choice = m.group(1).lower()
        reason = rest.strip() or stripped  # the lines after the verdict, or the whole answer
    return RawVerdict(choice, reason[:500], text)


def model_judge(lm, settings: GenerationSettings | None = None, generator: Generator | None = None) -> JudgeFn:
    """A judge made of a causal LM: the rubric, the task and both responses in one prompt (JUDGE_PROMPT)."""
    settings = settings or GenerationSettings(max_new_tokens=48)
    gen = generator or (lambda lm_, text, s, chat, system: _stream_generate(lm_, text, s, chat, system))

    def judge(task: str, response_1: str, response_2: str, rubric: str) -> RawVerdict:
        p = JUDGE_PROMPT.render({"rubric": rubric, "task": task, "response_1": response_1 or "(empty)",
                                 "response_2": response_2 or "(empty)"})
        text, system = p.user, p.system or None
        result = gen(lm, text, settings, True, system)
        return parse_verdict(result.text)

    return judge


def judge_pair(exp: Experiment, row: int, x: Arm, y: Arm, judge: JudgeFn, judge_model: str) -> JudgeVerdict:
    """Ask the judge twice: x as response 1, then y as response 1."""
    cx, cy = exp.cell(row, x), exp.cell(row, y)
    if cx is None or cy is None or not (cx.ok and cy.ok):
        raise InputError(f"Row {row + 1} lacks an output for {exp.arm_label(x)} or {exp.arm_label(y)}: run first.")
    task = task_text(exp, row)
    first = judge(task, cx.output, cy.output, exp.rubric)
    second = judge(task, cy.output, cx.output, exp.rubric)
    for v in (first, second):
        if v.choice not in ("1", "2", "tie"):
            raise InputError(f"A judge answers '1', '2' or 'tie' (got {v.choice!r}).")
    return JudgeVerdict(row, x, y, judge_model, first, second, time.time())


def run_judge(exp: Experiment, judge: JudgeFn, judge_model: str, store: ExperimentStore | None = None,
              pairs: Sequence[tuple[Arm, Arm]] | None = None, rows: Iterable[int] | None = None,
              on_verdict: Callable[[JudgeVerdict, int, int], None] | None = None) -> list[JudgeVerdict]:
    """Judge every row with both outputs for each pair (all pairs by default); save each verdict."""
    if not exp.rubric.strip():
        raise InputError("The judge needs a rubric: write what makes a response better.")
    pairs = [(_canonical(exp, x, y)) for x, y in (pairs or exp.pairs())]
    todo = [(r, x, y) for r in (rows if rows is not None else range(len(exp.rows))) for x, y in pairs
            if (c1 := exp.cell(r, x)) is not None and c1.ok and (c2 := exp.cell(r, y)) is not None and c2.ok]
    if not todo:
        raise InputError("Nothing to judge yet: run the experiment so that rows have outputs to compare.")
    out = []
    for i, (r, x, y) in enumerate(todo, start=1):
        v = judge_pair(exp, r, x, y, judge, judge_model)
        key = pair_key(x, y)
        exp.verdicts[(r, key, judge_model)] = v
        if store is not None:
            store.save_verdict(exp.id, v, key)
        out.append(v)
        if on_verdict is not None:
            on_verdict(v, i, len(todo))
    return out


# --- summary ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class WinRate:
    """Wins, losses and ties of one arm in pairwise comparisons, with a 95% Wilson score interval.

    rate = (wins + ties / 2) / n with n = wins + losses + ties ("both bad" counts as a tie).
    The Wilson interval of a proportion p over n trials, z = 1.96:
        centre = (p + z^2 / 2n) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)
    With ties counted as halves, p is not a count over n, so the interval is an approximation;
    with no ties it is exactly the Wilson score interval. rate, low, high are None when n == 0.
    """

    wins: float
    losses: float
    ties: float
    rate: float | None
    low: float | None
    high: float | None

    @property
    def n(self) -> float:
        return self.wins + self.losses + self.ties


def wilson_interval(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of proportion p over n trials."""
    if n <= 0:
        raise InputError(f"A confidence interval needs at least one comparison (n = {n}).")
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def win_rate(wins: float, losses: float, ties: float, z: float = Z95) -> WinRate:
    """Win rate with ties as half a win, and its Wilson interval (see WinRate)."""
    n = wins + losses + ties
    if n == 0:
        return WinRate(wins, losses, ties, None, None, None)
    p = (wins + ties / 2) / n
    lo, hi = wilson_interval(p, n, z)
    return WinRate(wins, losses, ties, p, lo, hi)


@dataclass(frozen=True)
class ArmSummary:
    """Per arm: how many cells, how many failed, check pass rates, mean scores, latency, win rates."""

    arm: Arm
    label: str
    cells: int
    errors: int
    pass_rate: float | None  # share of outputs that pass every check
    check_rates: tuple[float | None, ...]  # per check, same order as exp.checks
    exact: float | None
    f1: float | None
    cosine: float | None
    mean_seconds: float | None
    mean_tokens: float | None
    human: WinRate
    judge: WinRate
    both_bad: int


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _tally(outcomes: Iterable[tuple[Arm, Arm, Arm | None]], arm: Arm) -> tuple[int, int, int]:
    w = losses = t = 0
    for p, q, winner in outcomes:
        if arm not in (p, q):
            continue
        if winner is None:
            t += 1
        elif winner == arm:
            w += 1
        else:
            losses += 1
    return w, losses, t


def summarize(exp: Experiment) -> list[ArmSummary]:
    """One ArmSummary per arm: the numbers the summary table and charts show."""
    out = []
    vote_outcomes = [(v.a, v.b, v.winner) for v in exp.votes.values()]
    judge_outcomes = [(v.x, v.y, v.winner) for v in exp.verdicts.values()]
    for arm in exp.arms:
        cells = [c for c in exp.cells.values() if c.arm == arm]
        ok = [c for c in cells if c.ok]
        checked = [c for c in ok if len(c.checks) == len(exp.checks)]
        pass_rate = (sum(all(c.checks) for c in checked) / len(checked)) if (checked and exp.checks) else None
        rates = tuple((sum(c.checks[i] for c in checked) / len(checked)) if checked else None
                      for i in range(len(exp.checks)))
        both_bad = sum(1 for v in exp.votes.values() if v.choice == "both bad" and arm in (v.a, v.b))
        out.append(ArmSummary(
            arm=arm, label=exp.arm_label(arm), cells=len(cells), errors=len(cells) - len(ok),
            pass_rate=pass_rate, check_rates=rates,
            exact=_mean(c.exact for c in ok), f1=_mean(c.f1 for c in ok), cosine=_mean(c.cosine for c in ok),
            mean_seconds=_mean(c.seconds for c in ok), mean_tokens=_mean(c.new_tokens for c in ok),
            human=win_rate(*_tally(vote_outcomes, arm)), judge=win_rate(*_tally(judge_outcomes, arm)),
            both_bad=both_bad,
        ))
    return out


# --- export -----------------------------------------------------------------------------------

def to_records(exp: Experiment) -> list[dict[str, Any]]:
    """One flat record per cell (the CSV's rows), in grid order."""
    out = []
    for i, r in enumerate(exp.rows):
        for arm in exp.arms:
            c = exp.cell(i, arm)
            rec: dict[str, Any] = {"experiment": exp.id, "row": i + 1}
            rec.update({k: v for k, v in r.values.items()})
            rec["reference"] = r.reference or ""
            rec.update(variant=arm.variant, model=arm.model_id, output=c.output if c else "",
                       error=(c.error or "") if c else "not run", new_tokens=c.new_tokens if c else "",
                       prompt_tokens=c.prompt_tokens if c else "", seconds=round(c.seconds, 4) if c else "",
                       finish_reason=c.finish_reason if c else "")
            for j, chk in enumerate(exp.checks):
                rec[f"check: {chk.label}"] = (c.checks[j] if c and len(c.checks) == len(exp.checks) else "")
            for k in ("exact", "f1", "cosine"):
                val = getattr(c, k) if c else None
                rec[k] = "" if val is None else round(val, 4)
            out.append(rec)
    return out


def to_csv(exp: Experiment) -> str:
    records = to_records(exp)
    buf = io.StringIO()
    if records:
        fields: dict[str, None] = {}
        for r in records:
            fields.update(dict.fromkeys(r))
        w = csv.DictWriter(buf, fieldnames=list(fields))
        w.writeheader()
        w.writerows(records)
    return buf.getvalue()


def to_dict(exp: Experiment) -> dict[str, Any]:
    """Everything: templates, inputs, settings, checks, cells, votes, verdicts, and the summary."""
    return {
        "id": exp.id, "name": exp.name, "parent_id": exp.parent_id, "created": exp.created, "updated": exp.updated,
        **exp.spec(), "checks": [dataclasses.asdict(c) for c in exp.checks], "rubric": exp.rubric,
        "cells": [_cell_dict(c) for c in exp.cells.values()],
        "votes": [_vote_dict(v) for v in exp.votes.values()],
        "verdicts": [_verdict_dict(v) for v in exp.verdicts.values()],
        "summary": [_summary_dict(s) for s in summarize(exp)],
    }


def to_json(exp: Experiment) -> str:
    return json.dumps(to_dict(exp), indent=2, ensure_ascii=False)


def _summary_dict(s: ArmSummary) -> dict:
    d = dataclasses.asdict(s)
    d["arm"] = s.arm.key
    return d


# --- serialisation ----------------------------------------------------------------------------

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


def _cell_dict(c: Cell) -> dict:
    d = dataclasses.asdict(c)
    d["checks"] = list(c.checks)
    return d


def _vote_dict(v: Vote) -> dict:
    return {"row": v.row, "a": v.a.key, "b": v.b.key, "choice": v.choice, "blind": v.blind, "created": v.created,
            "winner": v.winner.key if v.winner else None}


def _verdict_dict(v: JudgeVerdict) -> dict:
    return {"row": v.row, "x": v.x.key, "y": v.y.key, "judge_model": v.judge_model,
            "x_first": dataclasses.asdict(v.first), "y_first": dataclasses.asdict(v.second),
            "outcome": v.outcome, "winner": v.winner.key if v.winner else None, "consistent": v.consistent,
            "created": v.created}


# --- the database -----------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, parent_id TEXT, created REAL NOT NULL, updated REAL NOT NULL,
    variants TEXT NOT NULL, rows TEXT NOT NULL, settings TEXT NOT NULL, checks TEXT NOT NULL, rubric TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    row INTEGER NOT NULL, variant TEXT NOT NULL, model_id TEXT NOT NULL,
    output TEXT NOT NULL, system TEXT, user TEXT NOT NULL, prompt TEXT NOT NULL,
    new_tokens INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, seconds REAL NOT NULL,
    first_token_seconds REAL NOT NULL, finish_reason TEXT NOT NULL, error TEXT,
    checks TEXT NOT NULL, exact REAL, f1 REAL, cosine REAL, created REAL NOT NULL,
    PRIMARY KEY (experiment_id, row, variant, model_id)
);
CREATE TABLE IF NOT EXISTS votes (
    experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    row INTEGER NOT NULL, pair TEXT NOT NULL,
    a_variant TEXT NOT NULL, a_model TEXT NOT NULL, b_variant TEXT NOT NULL, b_model TEXT NOT NULL,
    choice TEXT NOT NULL, blind INTEGER NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (experiment_id, row, pair)
);
CREATE TABLE IF NOT EXISTS verdicts (
    experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    row INTEGER NOT NULL, pair TEXT NOT NULL, judge_model TEXT NOT NULL,
    x_variant TEXT NOT NULL, x_model TEXT NOT NULL, y_variant TEXT NOT NULL, y_model TEXT NOT NULL,
    first_choice TEXT NOT NULL, first_reason TEXT NOT NULL, first_text TEXT NOT NULL,
    second_choice TEXT NOT NULL, second_reason TEXT NOT NULL, second_text TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (experiment_id, row, pair, judge_model)
);
"""


@dataclass(frozen=True)
class ExperimentInfo:
    """A line of the list of saved experiments."""

    id: str
    name: str
    created: float
    updated: float
    parent_id: str | None
    variants: int
    rows: int
    cells: int
    votes: int
    verdicts: int


class ExperimentStore:
    """Experiments in an SQLite file (default: data_root()/experiments.sqlite3).

    Each call opens its own short connection (and makes sure the tables exist), so one store
    can be shared by threads and sessions; SQLite serialises the writes. The object holds no
    data, only one idle connection that keeps the write-ahead log attached (see __init__).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            from playground.paths import data_root

            path = data_root() / "experiments.sqlite3"
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
        # One idle connection held open keeps the WAL attached, so the short connections below do
        # not each checkpoint and fsync on close: a saved cell costs under a millisecond, not ~25.
        self._keeper = sqlite3.connect(self.path, check_same_thread=False)
        self._keeper.execute("SELECT COUNT(*) FROM experiments").fetchone()

    def close(self) -> None:
        self._keeper.close()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as exc:
            raise PlaygroundError(f"The experiments database {self.path} cannot be opened: {exc}.") from exc
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across an app crash, one fsync less per cell
            con.executescript(SCHEMA)  # IF NOT EXISTS: a new or deleted file gets its tables back
            with con:  # a transaction: committed on success, rolled back on error
                yield con
        except sqlite3.DatabaseError as exc:
            raise PlaygroundError(f"The experiments database {self.path} failed: {exc}. "
                                  "If the file is damaged, move it away and the app starts a new one.") from exc
        finally:
            con.close()

    # writing
    def save(self, exp: Experiment) -> None:
        """Insert or update the experiment's definition (not its cells, votes or verdicts)."""
        exp.updated = time.time()
        with self._connect() as con:
            con.execute(
                "INSERT INTO experiments (id, name, parent_id, created, updated, variants, rows, settings, checks, rubric)"
                " VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET name=excluded.name,"
                " parent_id=excluded.parent_id, updated=excluded.updated, variants=excluded.variants,"
                " rows=excluded.rows, settings=excluded.settings, checks=excluded.checks, rubric=excluded.rubric",
                (exp.id, exp.name, exp.parent_id, exp.created, exp.updated,
                 json.dumps([_variant_dict(v) for v in exp.variants]), json.dumps([_row_dict(r) for r in exp.rows]),
                 json.dumps(_settings_dict(exp.settings)), json.dumps([dataclasses.asdict(c) for c in exp.checks]),
                 exp.rubric),
            )

    def create(self, exp: Experiment) -> None:
        """Save a new experiment with whatever cells, votes and verdicts it already holds (a fork)."""
        self.save(exp)
        self.save_cells(exp.id, exp.cells.values())
        for (row, key), v in exp.votes.items():
            self.save_vote(exp.id, v, key)
        for (row, key, _), v in exp.verdicts.items():
            self.save_verdict(exp.id, v, key)

    def save_cell(self, exp_id: str, cell: Cell) -> None:
        self.save_cells(exp_id, [cell])

    def save_cells(self, exp_id: str, cells: Iterable[Cell]) -> None:
        rows = [(exp_id, c.row, c.variant, c.model_id, c.output, c.system, c.user, c.prompt, c.new_tokens,
                 c.prompt_tokens, c.seconds, c.first_token_seconds, c.finish_reason, c.error, json.dumps(list(c.checks)),
                 c.exact, c.f1, c.cosine, c.created) for c in cells]
        if not rows:
            return
        with self._connect() as con:
            self._require(con, exp_id)
            con.executemany("INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            con.execute("UPDATE experiments SET updated=? WHERE id=?", (time.time(), exp_id))

    def _require(self, con: sqlite3.Connection, exp_id: str) -> None:
        if con.execute("SELECT 1 FROM experiments WHERE id=?", (exp_id,)).fetchone() is None:
            raise InputError(f"Experiment '{exp_id}' is no longer in {self.path} (deleted, or the file was replaced): "
                             "press Save to store it again.")

    def save_vote(self, exp_id: str, v: Vote, pair: str) -> None:
        with self._connect() as con:
            self._require(con, exp_id)
            con.execute("INSERT OR REPLACE INTO votes VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (exp_id, v.row, pair, v.a.variant, v.a.model_id, v.b.variant, v.b.model_id, v.choice,
                         int(v.blind), v.created))

    def save_verdict(self, exp_id: str, v: JudgeVerdict, pair: str) -> None:
        with self._connect() as con:
            self._require(con, exp_id)
            con.execute("INSERT OR REPLACE INTO verdicts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (exp_id, v.row, pair, v.judge_model, v.x.variant, v.x.model_id, v.y.variant, v.y.model_id,
                         v.first.choice, v.first.reason, v.first.text, v.second.choice, v.second.reason,
                         v.second.text, v.created))

    def delete(self, exp_id: str) -> None:
        with self._connect() as con:
            con.execute("DELETE FROM experiments WHERE id=?", (exp_id,))

    # reading
    def exists(self, exp_id: str) -> bool:
        with self._connect() as con:
            return con.execute("SELECT 1 FROM experiments WHERE id=?", (exp_id,)).fetchone() is not None

    def load(self, exp_id: str) -> Experiment:
        """The experiment with its cells, votes and verdicts; an InputError if there is none with this id."""
        with self._connect() as con:
            e = con.execute("SELECT * FROM experiments WHERE id=?", (exp_id,)).fetchone()
            if e is None:
                raise InputError(f"There is no saved experiment with id '{exp_id}' (in {self.path}).")
            exp = Experiment(
                name=e["name"], id=e["id"], parent_id=e["parent_id"], created=e["created"], updated=e["updated"],
                variants=tuple(PromptVariant(**v) for v in json.loads(e["variants"])),
                rows=tuple(InputRow(r["values"], r["reference"]) for r in json.loads(e["rows"])),
                settings=_settings_from(json.loads(e["settings"])),
                checks=tuple(Check(**c) for c in json.loads(e["checks"])), rubric=e["rubric"],
            )
            for c in con.execute("SELECT * FROM cells WHERE experiment_id=? ORDER BY row", (exp_id,)):
                cell = Cell(row=c["row"], variant=c["variant"], model_id=c["model_id"], output=c["output"],
                            system=c["system"], user=c["user"], prompt=c["prompt"], new_tokens=c["new_tokens"],
                            prompt_tokens=c["prompt_tokens"], seconds=c["seconds"],
                            first_token_seconds=c["first_token_seconds"], finish_reason=c["finish_reason"],
                            error=c["error"], checks=tuple(bool(x) for x in json.loads(c["checks"])),
                            exact=c["exact"], f1=c["f1"], cosine=c["cosine"], created=c["created"])
                exp.cells[(cell.row, cell.variant, cell.model_id)] = cell
            for v in con.execute("SELECT * FROM votes WHERE experiment_id=? ORDER BY created", (exp_id,)):
                exp.votes[(v["row"], v["pair"])] = Vote(v["row"], Arm(v["a_variant"], v["a_model"]),
                                                        Arm(v["b_variant"], v["b_model"]), v["choice"],
                                                        bool(v["blind"]), v["created"])
            for v in con.execute("SELECT * FROM verdicts WHERE experiment_id=? ORDER BY created", (exp_id,)):
                exp.verdicts[(v["row"], v["pair"], v["judge_model"])] = JudgeVerdict(
                    v["row"], Arm(v["x_variant"], v["x_model"]), Arm(v["y_variant"], v["y_model"]), v["judge_model"],
                    RawVerdict(v["first_choice"], v["first_reason"], v["first_text"]),
                    RawVerdict(v["second_choice"], v["second_reason"], v["second_text"]), v["created"])
        return exp

    def list(self) -> list[ExperimentInfo]:
        """Saved experiments, the most recently changed first."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT e.id, e.name, e.created, e.updated, e.parent_id, e.variants, e.rows,"
                " (SELECT COUNT(*) FROM cells c WHERE c.experiment_id=e.id AND c.error IS NULL) AS n_cells,"
                " (SELECT COUNT(*) FROM votes v WHERE v.experiment_id=e.id) AS n_votes,"
                " (SELECT COUNT(*) FROM verdicts j WHERE j.experiment_id=e.id) AS n_verdicts"
                " FROM experiments e ORDER BY e.updated DESC").fetchall()
        return [ExperimentInfo(r["id"], r["name"], r["created"], r["updated"], r["parent_id"],
                               len(json.loads(r["variants"])), len(json.loads(r["rows"])), r["n_cells"], r["n_votes"],
                               r["n_verdicts"]) for r in rows]


# --- what the page asks for in one call -------------------------------------------------------

def prepare(store: ExperimentStore, current: Experiment | None, *, name: str, variants: Sequence[PromptVariant],
            rows: Sequence[InputRow], settings: RunSettings, checks: Sequence[Check], rubric: str) -> tuple[Experiment, str, int]:
    """The experiment a Run (or Save) should use, saved: (experiment, action, cells reused).

    action: "new" (none open), "same" (the open one, unchanged or only its name/checks/rubric
    edited: missing cells are filled in), "rerun" (templates, inputs or settings changed after
    outputs exist: a new experiment is forked from the open one, reusing unchanged cells).
    """
    draft = Experiment(name=name, variants=tuple(variants), rows=tuple(rows), settings=settings,
                       checks=tuple(checks), rubric=rubric)
    draft.validate()
    if current is None:
        store.create(draft)
        return draft, "new", 0
    if draft.spec() == current.spec() or not current.cells:
        current.name, current.checks, current.rubric = name, tuple(checks), rubric
        current.variants, current.rows, current.settings = draft.variants, draft.rows, draft.settings
        store.save(current)
        rescore(current, store=store)
        return current, "same", 0
    child, reused = fork(current, name=name, variants=variants, rows=rows, settings=settings, checks=checks,
                         rubric=rubric)
    store.create(child)
    return child, "rerun", reused
