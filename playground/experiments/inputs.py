"""Input sets of an experiment: from a table, pasted text, or an uploaded CSV, TSV, JSON or JSONL file.

- `rows_from_records`: InputRows from dicts (table rows, records), with an optional
  reference column; at most MAX_ROWS (1,000) rows.
- `parse_upload(filename, data)`: records from an uploaded file by its extension. The bytes go
  through `playground.uploads.read_text` (UTF-8 only, no binary, at most UPLOAD_BYTES); a table
  has at most UPLOAD_COLUMNS columns and MAX_ROWS rows, a JSON text nests at most JSON_DEPTH
  levels (checked before parsing, so '[[[[...' never reaches Python's recursion limit).
- `parse_pasted`: a pasted table with a header line, or one row per line when the templates
  have a single variable; at most PASTE_CHARS characters.
- `check_size`: the number of generations a run makes; more than CONFIRM_CELLS must be confirmed.
- `upload_rows`, `guess_reference`: what the page does with an uploaded file's records (the
  reference column it guesses, the rows it puts in the table, and what it says about columns
  no template uses).

Every refusal names the file, the line or item, and the numbers.

What it leaves out: reading spreadsheets (.xlsx: export as CSV) and guessing encodings.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from playground.errors import InputError
from playground.experiments.model import CONFIRM_CELLS, MAX_ROWS, InputRow
from playground.limits import CELL_CHARS, JSON_DEPTH, PASTE_CHARS, UPLOAD_COLUMNS
from playground.uploads import json_depth, read_text

UPLOAD_TYPES = ("csv", "tsv", "txt", "jsonl", "json")
REFERENCE_GUESSES = ("reference", "answer", "expected", "target")


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
    for n, rec in enumerate(records, start=1):
        cleaned = {str(k): _clean(v) for k, v in rec.items()}
        for k, v in cleaned.items():
            if isinstance(v, str):
                CELL_CHARS.check(len(v), f"{name}: row {n:,}, column '{k}'", "Shorten the value.")
        if all(v == "" for v in cleaned.values()):
            continue
        ref = cleaned.pop(reference_column, "") if reference_column else ""
        values = {c: cleaned.get(c, "") for c in columns if c != reference_column}
        rows.append(InputRow(values, str(ref) if ref != "" else None))
    if len(rows) > MAX_ROWS:
        raise InputError(f"{name} has {len(rows):,} rows; an experiment holds at most {MAX_ROWS:,}. "
                         "Split the set, or keep the rows you need.")
    return tuple(rows)


def parse_csv(data: bytes, name: str = "the file", delimiter: str | None = None) -> list[dict[str, str]]:
    """Records from CSV / TSV bytes (UTF-8, header line first). Errors name the file and line."""
    text = read_text(data, name, what="a UTF-8 CSV or TSV file")
    if not text.strip():
        raise InputError(f"{name} holds only whitespace: there are no rows in it.")
    if delimiter is None:
        first = text.splitlines()[0]
        delimiter = "\t" if first.count("\t") > first.count(",") else (";" if first.count(";") > first.count(",") else ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
        header = [h.strip() for h in header]
        UPLOAD_COLUMNS.check(len(header), f"{name}'s header line", "Keep the columns the templates use.")
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
            if len(records) > MAX_ROWS:
                n = len(records) + sum(1 for r in reader if any(cell.strip() for cell in r))
                raise InputError(f"{name} has {n:,} rows; an experiment holds at most {MAX_ROWS:,}. "
                                 "Split the file, or keep the rows you need.")
    except csv.Error as exc:
        raise InputError(f"{name} is not a readable CSV file (line {reader.line_num:,}): {exc}.") from exc
    return records


def parse_jsonl(data: bytes, name: str = "the file") -> list[dict[str, Any]]:
    """Records from JSON Lines (one object per line) or a JSON array of objects."""
    text = read_text(data, name, what="a UTF-8 JSON or JSON Lines file").strip()
    if not text:
        raise InputError(f"{name} holds only whitespace: there are no records in it.")
    depth = json_depth(text)
    if text.startswith("[") and depth > JSON_DEPTH.value + 1 or not text.startswith("[") and depth > JSON_DEPTH.value:
        raise InputError(f"{name} nests arrays or objects {depth:,} levels deep; at most {JSON_DEPTH.value} are "
                         "allowed. Each record should be a flat object like {\"question\": \"...\"}.")
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name} is not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}.") from exc
        except ValueError as exc:  # e.g. an integer of more than 4,300 digits
            raise InputError(f"{name} cannot be read as JSON: {exc}.") from exc
        if not isinstance(items, list):
            raise InputError(f"{name} is a JSON {type(items).__name__}, not a list of objects like "
                             "[{\"question\": \"...\"}].")
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
            except ValueError as exc:  # e.g. an integer of more than 4,300 digits
                raise InputError(f"{name}, line {i:,} cannot be read as JSON: {exc}.") from exc
        where = "line"
    if len(numbered) > MAX_ROWS:
        raise InputError(f"{name} has {len(numbered):,} records; an experiment holds at most {MAX_ROWS:,}. "
                         "Split the file, or keep the records you need.")
    columns: dict[str, None] = {}
    for i, item in numbered:
        if not isinstance(item, dict):
            raise InputError(f"{name}, {where} {i:,}: expected an object like {{\"question\": \"...\"}}, "
                             f"got {type(item).__name__}.")
        columns.update(dict.fromkeys(item))
    UPLOAD_COLUMNS.check(len(columns), f"{name}'s set of keys", "Keep the keys the templates use.")
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
    PASTE_CHARS.check(len(text), "The pasted text", "Paste fewer rows, or upload them as a file.")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) > MAX_ROWS + 1:
        raise InputError(f"The pasted text has {len(lines):,} lines; an experiment holds at most {MAX_ROWS:,} rows. "
                         "Paste fewer rows.")
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


def guess_reference(columns: Sequence[str]) -> str | None:
    """The column that most likely holds reference answers ('reference', 'answer', 'expected', 'target')."""
    return next((c for c in REFERENCE_GUESSES if c in columns), None)


def record_columns(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every column of the records, in order of first appearance."""
    return list(dict.fromkeys(str(k) for r in records for k in r))


def upload_rows(records: Sequence[Mapping[str, Any]], reference_column: str | None, variables: Sequence[str],
                filename: str, reference: str = "reference") -> tuple[list[dict[str, Any]], str, str]:
    """What an uploaded file's records become in the input table: (rows, message kind, message).

    The reference column (if any) is renamed `reference`; every other column is kept (a column
    no template uses stays in the rows, hidden, until a template names it). The message says how
    many rows came in, which variables the file has no column for, and which columns no
    template uses; its kind is "warning" when either is the case, else "success".
    """
    rows = []
    for r in records:
        rec = {str(k): ("" if v is None else v) for k, v in r.items() if k != reference_column}
        rec[reference] = str(r.get(reference_column, "") or "") if reference_column else ""
        rows.append(rec)
    columns = [c for c in record_columns(records) if c != reference_column]
    unused = [c for c in columns if c not in variables]
    missing = [v for v in variables if v not in columns]
    notes = [f"{len(rows)} row(s) from {filename} are now the inputs."]
    if missing:
        notes.append(f"It has no column for {', '.join(repr(m) for m in missing)}: those cells are empty; fill them in.")
    if unused:
        notes.append(f"Column(s) {', '.join(repr(u) for u in unused)} are used by no template and are hidden; "
                     f"write {{{unused[0]}}} in a template to use one.")
    return rows, ("warning" if (missing or unused) else "success"), " ".join(notes)
