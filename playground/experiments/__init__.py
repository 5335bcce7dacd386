"""A/B experiments on prompt templates: run every variant on every input row, score, judge, vote, save.

One job per module; this package re-exports every public name, so `from playground.experiments
import X` is the way in:

- `model`: the dataclasses (`Experiment`, `InputRow`, `RunSettings`, `Arm`, `Cell`, `Vote`,
  `RawVerdict`, `JudgeVerdict`) and the size rules;
- `inputs`: input sets from a table, pasted text, or an uploaded CSV / TSV / JSON / JSONL file,
  with the bounds of playground.limits (bytes, rows, columns, JSON nesting);
- `checks`: automatic checks (regex on RE2, which never backtracks) and reference scores;
- `runner`: `run`, `rescore`, `fork`;
- `votes`: human votes, blind mode, the next row to vote on;
- `judge`: a judge model asked in both orders;
- `stats`: `summarize`, win rates with Wilson intervals;
- `export`: CSV and JSON;
- `store`: `ExperimentStore`, SQLite by default, PostgreSQL with DATABASE_URL (`playground.database`);
- `flow`: what the Prompt A/B page asks for in one call (`prepare`, table bookkeeping).

What it leaves out: rendering (components/experiments.py), the model cache (the page passes a
loader), and significance tests between more than two arms.
"""

from __future__ import annotations

from playground.experiments.model import (
    Arm, CONFIRM_CELLS, Cell, DEFAULT_RUBRIC, Experiment, InputRow, JudgeVerdict, MAX_MODELS, MAX_ROWS,
    MAX_VARIANTS, MIN_VARIANTS, RawVerdict, RunSettings, VARIANT_NAMES, VOTE_CHOICES, Vote, combine,
)

from playground.experiments.checks import (
    CHECK_KINDS, Check, LENGTH_UNITS, compile_regex, embedding_similarity, exact_match, normalize_answer,
    run_checks, token_f1,
)

from playground.experiments.inputs import (
    REFERENCE_GUESSES, UPLOAD_TYPES, check_size, guess_reference, parse_csv, parse_jsonl, parse_pasted,
    parse_upload, record_columns, rows_from_records, upload_rows,
)

from playground.experiments.runner import (
    Generator, RunReport, fork, render_cell, rescore, run, score_cell,
)

from playground.experiments.votes import (
    blind_swap, next_row, pair_key, shown_pair, votable_rows, vote, vote_for,
)

from playground.experiments.judge import (
    JUDGE_PROMPT, JudgeFn, judge_pair, model_judge, parse_verdict, run_judge, task_text,
)

from playground.experiments.stats import (
    ArmSummary, WinRate, Z95, summarize, wilson_interval, win_rate,
)

from playground.experiments.export import (
    to_csv, to_dict, to_json, to_records,
)

from playground.experiments.store import (
    ExperimentInfo, ExperimentStore, SCHEMA,
)

from playground.experiments.flow import (
    REFERENCE, differs, empty_values, extra_settings, merge_edits, page_settings, prepare, preview, run_message,
    save_message, table_columns,
)

__all__ = [
    "Arm", "CONFIRM_CELLS", "Cell", "DEFAULT_RUBRIC", "Experiment", "InputRow", "JudgeVerdict", "MAX_MODELS",
    "MAX_ROWS", "MAX_VARIANTS", "MIN_VARIANTS", "RawVerdict", "RunSettings", "VARIANT_NAMES", "VOTE_CHOICES",
    "Vote", "combine", "CHECK_KINDS", "Check", "LENGTH_UNITS", "compile_regex", "embedding_similarity",
    "exact_match", "normalize_answer", "run_checks", "token_f1", "REFERENCE_GUESSES", "UPLOAD_TYPES",
    "check_size", "guess_reference", "parse_csv", "parse_jsonl", "parse_pasted", "parse_upload",
    "record_columns", "rows_from_records", "upload_rows", "Generator", "RunReport", "fork", "render_cell",
    "rescore", "run", "score_cell", "blind_swap", "next_row", "pair_key", "shown_pair", "votable_rows",
    "vote", "vote_for", "JUDGE_PROMPT", "JudgeFn", "judge_pair", "model_judge", "parse_verdict", "run_judge",
    "task_text", "ArmSummary", "WinRate", "Z95", "summarize", "wilson_interval", "win_rate", "to_csv",
    "to_dict", "to_json", "to_records", "ExperimentInfo", "ExperimentStore", "SCHEMA", "REFERENCE", "differs",
    "empty_values", "extra_settings", "merge_edits", "page_settings", "prepare", "preview", "run_message",
    "save_message", "table_columns",
]
