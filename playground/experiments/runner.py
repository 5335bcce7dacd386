"""Running an experiment: render each cell's prompt, generate, score, save; rescore; fork.

- `run(exp, store, load_model, ...)` fills every missing cell (row x arm), model by model,
  row by row, saving each finished cell the moment it is done (and writing the whole
  experiment back if its database file was deleted or replaced meanwhile): if the model fails
  halfway, the run stops with a message and every finished cell is already in the database;
  running again fills in only what is missing. A row the model cannot take (a prompt longer
  than its context, a template that hits a rendering bound) gets an error cell and the run
  goes on.
- `rescore` re-runs the checks (and the reference scores) on every cell.
- `fork` makes a new experiment from an old one with some parts changed, copying the cells
  (and votes and verdicts) that did not change.

What it leaves out: the model cache (the caller passes `load_model`), rendering results
(components/experiments.py), and deciding between a rerun and a fork (flow.prepare).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from playground.errors import InputError, PlaygroundError, describe
from playground.experiments.checks import Check, embedding_similarity, exact_match, run_checks, token_f1
from playground.experiments.inputs import check_size
from playground.experiments.model import (
    CONFIRM_CELLS, Arm, Cell, Experiment, InputRow, RunSettings, _row_dict, _settings_dict,
)
from playground import answers
from playground.generate import GenerationResult, GenerationSettings, stream
from playground.limits import LimitError, TimeLimitError
from playground.prompts import PromptVariant, RenderedPrompt

if TYPE_CHECKING:
    from playground.experiments.store import ExperimentStore


def render_cell(exp: Experiment, row: int, variant: str) -> RenderedPrompt:
    """The prompt a variant gives for a row (only the variables the variant uses are passed)."""
    v = exp.variant(variant)
    values = exp.rows[row].values
    return v.render({k: values[k] for k in v.variables if k in values})


Generator = Callable[..., GenerationResult]


def _stream_generate(lm, text: str, settings: GenerationSettings, use_chat_template: bool, system: str | None,
                     on_text: Callable[[str], None] | None = None, plain: bool = False) -> GenerationResult:
    s = stream(lm, text, settings, use_chat_template=use_chat_template, system=system, plain=plain)
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
        generator: Generator | None = None, confirmed: bool = False, plain: bool = False) -> RunReport:
    """Generate every pending cell of `exp`, saving each one to `store` as soon as it is finished.

    load_model(model_id) -> LoadedModel (the page passes its cache). on_cell(cell, done, total)
    after each cell; on_text(row, arm, text so far) while one streams. `generator` replaces the
    streaming call (same signature as playground.generate.generate) for scripts and tests.
    A row the model cannot take (InputError: e.g. longer than the context) becomes an error cell
    and the run goes on; any other failure stops the run with a PlaygroundError that says how
    many cells were saved. Running again generates only what is missing or failed.
    `plain`: special tokens in the rendered prompts reach the model as ordinary text (playground.special;
    a model on a server tokenizes by itself and gets the characters either way).
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
    stalled: dict[str, str] = {}  # variant -> why its rendering was stopped (a template that loops too much)
    for row, arm in pending:
        where = f"row {row + 1}, template {arm.variant}, {arm.model_id}"
        try:
            lm = models.get(arm.model_id)
            if lm is None:
                lm = models[arm.model_id] = load_model(arm.model_id)
            cell = Cell(row, arm.variant, arm.model_id, created=time.time())
            try:
                if arm.variant in stalled:  # the same template would be stopped again, after the same seconds
                    raise LimitError(f"{stalled[arm.variant]} (Not tried again on this row.)")
                try:
                    rendered = render_cell(exp, row, arm.variant)
                except TimeLimitError as exc:
                    stalled[arm.variant] = str(exc)
                    raise
                cell.system, cell.user = rendered.system, rendered.user
                text, system = rendered.user, rendered.system or None
                if generator is not None:
                    result = generator(lm, text, exp.settings.generation, exp.settings.use_chat_template, system)
                else:
                    cb = (lambda s, _r=row, _a=arm: on_text(_r, _a, s)) if on_text is not None else None
                    result = _stream_generate(lm, text, exp.settings.generation, exp.settings.use_chat_template,
                                              system, cb, plain and getattr(lm, "tokenizer", None) is not None)
                cell.output, cell.prompt = result.text, result.prompt
                cell.new_tokens, cell.prompt_tokens = result.new_tokens, result.prompt_tokens
                cell.seconds, cell.first_token_seconds = result.total_seconds, result.time_to_first_token
                cell.finish_reason = result.finish_reason
                cell.logprobs, cell.token_ids = result.logprobs, result.token_ids
                cell.origin = answers.origin_of(lm, text, exp.settings.generation, exp.settings.use_chat_template, result,
                                                plain)
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
