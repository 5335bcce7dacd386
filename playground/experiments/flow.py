"""What the Prompt A/B page asks for in one call: the experiment a Run or Save should use,
and the bookkeeping of its input table (edits kept across column changes, empty cells named).

- `prepare(store, current, ...)`: validate what the page holds and decide between filling in
  the open experiment and forking a rerun; save it.
- `merge_edits(base, edited)`: the table's rows after an edit, keeping the columns the editor
  did not show (a column no template uses yet, an uploaded file's extra columns).
- `table_columns(...)`: the input table's columns for the templates as they are.
- `empty_values(rows)`: the rows with an empty variable, for a warning.
- `page_settings(...)`: RunSettings from the page's controls; `differs(...)`: whether what the
  page holds would run differently from the open experiment.
- `preview(variant, values)`: what one template gives for one row, remembered (a template that
  hits its time bound costs those seconds once, not on every rerun).
- `save_message`, `run_message`: what the page says after a Save or a Run.

What it leaves out: Streamlit (the page keeps the session state; this module only computes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from playground.experiments.checks import Check
from playground.experiments.model import Experiment, InputRow, RunSettings
from playground.experiments.runner import RunReport, fork, rescore
from playground.generate import GenerationSettings
from playground.experiments.store import ExperimentStore
from playground.errors import PlaygroundError, describe
from playground.prompts import PromptVariant, RenderedPrompt, all_variables

REFERENCE = "reference"  # the input table's column of reference answers


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


def merge_edits(base: Sequence[Mapping[str, Any]], edited: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows as edited, each on top of the base row it came from (so columns the editor did not
    show are kept); rows added in the editor have no base, rows deleted at the end are gone.

    >>> merge_edits([{"q": "a", "hidden": 1}], [{"q": "b"}, {"q": "c"}])
    [{'q': 'b', 'hidden': 1}, {'q': 'c'}]
    """
    return [{**(base[i] if i < len(base) else {}), **r} for i, r in enumerate(edited)]


def table_columns(valid: Sequence[PromptVariant], previous: Sequence[str] | None, templates_broken: bool) -> list[str]:
    """The input table's columns: the valid templates' variables and the reference; while a
    template is broken, the columns it had before (so the table does not lose a column mid-edit)."""
    if templates_broken and previous is not None:
        return list(previous)
    return [*all_variables(valid), REFERENCE]


def empty_values(rows: Sequence[InputRow], at_most: int = 5) -> str | None:
    """'row 2 (question); row 5 (tone)' for rows with an empty variable (the first `at_most`), or None."""
    empty = [f"row {i + 1} ({', '.join(k for k, v in r.values.items() if v == '')})"
             for i, r in enumerate(rows) if any(v == "" for v in r.values.values())]
    if not empty:
        return None
    return "; ".join(empty[:at_most]) + (" …" if len(empty) > at_most else "")


def page_settings(model_ids: Sequence[str], max_new_tokens: int, temperature: float, use_chat_template: bool,
                  extra: Mapping[str, Any] | None = None) -> RunSettings:
    """RunSettings from the page's controls; `extra` holds generation settings the page has no
    control for (kept from a reopened experiment)."""
    generation = GenerationSettings(**{**(extra or {}), "max_new_tokens": max_new_tokens, "temperature": temperature})
    return RunSettings(tuple(model_ids), generation, use_chat_template)


def extra_settings(generation: GenerationSettings, shown: Sequence[str] = ("max_new_tokens", "temperature")) -> dict:
    """The generation settings other than those the page shows (to keep them on a reopened experiment)."""
    return {k: v for k, v in dataclasses.asdict(generation).items() if k not in shown}


def differs(exp: Experiment, variants: Sequence[PromptVariant], rows: Sequence[InputRow], settings: RunSettings) -> bool:
    """Whether these templates, rows and settings would produce different cells from `exp`'s."""
    return exp.spec() != Experiment(exp.name, tuple(variants), tuple(rows), settings).spec()


@lru_cache(maxsize=256)
def _preview(variant: PromptVariant, values: tuple[tuple[str, str], ...]) -> tuple[RenderedPrompt | None, str | None, bool]:
    from playground.limits import LimitError

    try:
        return variant.render(dict(values)), None, False
    except LimitError as exc:
        return None, describe(exc), True
    except PlaygroundError as exc:
        return None, describe(exc), False


def preview(variant: PromptVariant, values: Mapping[str, Any]) -> tuple[RenderedPrompt | None, str | None, bool]:
    """(rendered prompt, None, False), or (None, the error, whether a bound was hit) for one row.

    Remembered for the last 256 (template, row) pairs: the result depends on nothing else, and a
    runaway template then costs its RENDER_SECONDS once rather than on every rerun of the page.
    """
    given = tuple((k, str(values.get(k, ""))) for k in variant.variables)
    return _preview(variant, given)


def save_message(exp: Experiment, action: str, reused: int) -> str:
    if action == "rerun":
        return f"Saved as a new experiment (a rerun of `{exp.parent_id}`, {reused} unchanged output(s) reused)."
    return f"Saved '{exp.name}'."


def run_message(exp: Experiment, action: str, reused: int, report: RunReport) -> str:
    how = (f" Saved as a new experiment (a rerun of `{exp.parent_id}`); {reused} unchanged output(s) reused."
           if action == "rerun" else "")
    failed = f", {report.failed} failed (see the grid)" if report.failed else ""
    return f"Generated {report.generated} output(s) in {report.seconds:.1f} s{failed}.{how}"
