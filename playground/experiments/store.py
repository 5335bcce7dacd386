"""The experiment store: SQLite under `playground.paths.data_root()`, or PostgreSQL when DATABASE_URL is set.

Experiments with templates, inputs, settings, outputs, scores, votes and verdicts; list,
load, create (a fork with what it holds), save, delete. Each call opens its own short
connection and writes in one transaction, so one store is shared by threads and sessions,
and several app processes share one PostgreSQL database: every cell, vote and verdict is its
own row keyed by (experiment, row, pair, voter...), written with an atomic upsert, so two people
voting on one experiment at once, even on the same row, both have their votes counted (a voter
voting again on the same row and pair replaces their own vote, as in `votes.vote`).

What it leaves out: the engines and their SQL differences, and the migrations (`playground.database`).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from playground.database import SCHEMA, Database  # noqa: F401  (SCHEMA: re-exported by the package)
from playground.errors import InputError
from playground.experiments.checks import Check
from playground.experiments.model import (
    Arm, Cell, Experiment, InputRow, JudgeVerdict, RawVerdict, Vote, _row_dict, _settings_dict, _settings_from,
    _variant_dict,
)
from playground.prompts import PromptVariant


CELL_COLUMNS = ("experiment_id", "row", "variant", "model_id", "output", "system", "user", "prompt", "new_tokens",
                "prompt_tokens", "seconds", "first_token_seconds", "finish_reason", "error", "checks", "exact", "f1",
                "cosine", "created")
VOTE_COLUMNS = ("experiment_id", "row", "pair", "voter", "a_variant", "a_model", "b_variant", "b_model", "choice",
                "blind", "created")
VERDICT_COLUMNS = ("experiment_id", "row", "pair", "judge_model", "x_variant", "x_model", "y_variant", "y_model",
                   "first_choice", "first_reason", "first_text", "second_choice", "second_reason", "second_text",
                   "created")


def _upsert(table: str, columns: tuple[str, ...], keys: int) -> str:
    """INSERT ... ON CONFLICT (the first `keys` columns) DO UPDATE: one statement, atomic on both engines."""
    q = [f'"{c}"' for c in columns]
    sets = ", ".join(f"{c}=excluded.{c}" for c in q[keys:])
    return (f"INSERT INTO {table} ({', '.join(q)}) VALUES ({', '.join('?' * len(q))})"
            f" ON CONFLICT ({', '.join(q[:keys])}) DO UPDATE SET {sets}")


_CELL_SQL = _upsert("cells", CELL_COLUMNS, 4)
_VOTE_SQL = _upsert("votes", VOTE_COLUMNS, 4)
_VERDICT_SQL = _upsert("verdicts", VERDICT_COLUMNS, 4)


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
    """Experiments in an SQLite file (default: data_root()/experiments.sqlite3) or, with a `url` or
    DATABASE_URL (and no `path`), in PostgreSQL.

    Each call opens its own short connection (and makes sure the schema is at its version), so one
    store can be shared by threads, sessions and processes. The object holds no data; on SQLite,
    only one idle connection that keeps the write-ahead log attached (see __init__).
    """

    def __init__(self, path: str | Path | None = None, url: str | None = None) -> None:
        if path is not None:
            self.db = Database(path=path, label="experiments")
        elif url is not None:
            self.db = Database(url=url, label="experiments")
        else:
            self.db = Database.from_env(label="experiments")
        self.path = self.db.path  # None on PostgreSQL
        self._keeper = None
        if self.db.kind == "sqlite":
            with self._connect() as con:
                con.execute("PRAGMA journal_mode=WAL")
            # One idle connection held open keeps the WAL attached, so the short connections below do
            # not each checkpoint and fsync on close: a saved cell costs under a millisecond, not ~25.
            self._keeper = sqlite3.connect(self.path, check_same_thread=False)
            self._keeper.execute("SELECT COUNT(*) FROM experiments").fetchone()
        else:
            with self._connect() as con:  # fails now, with a message, if the server cannot be reached
                con.execute("SELECT COUNT(*) FROM experiments").fetchone()

    @property
    def where(self) -> str:
        """The file, or the database URL with its password masked."""
        return self.db.where

    def close(self) -> None:
        if self._keeper is not None:
            self._keeper.close()

    def _connect(self):
        return self.db.connect()

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
        for (row, key, *_), v in exp.votes.items():
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
            con.executemany(_CELL_SQL, rows)
            con.execute("UPDATE experiments SET updated=? WHERE id=?", (time.time(), exp_id))

    def _require(self, con, exp_id: str) -> None:
        if con.execute("SELECT 1 FROM experiments WHERE id=?", (exp_id,)).fetchone() is None:
            raise InputError(f"Experiment '{exp_id}' is no longer in {self.where} (deleted, or the file was replaced): "
                             "press Save to store it again.")

    def save_vote(self, exp_id: str, v: Vote, pair: str) -> None:
        with self._connect() as con:
            self._require(con, exp_id)
            con.execute(_VOTE_SQL,
                        (exp_id, v.row, pair, v.voter, v.a.variant, v.a.model_id, v.b.variant, v.b.model_id,
                         v.choice, int(v.blind), v.created))

    def save_verdict(self, exp_id: str, v: JudgeVerdict, pair: str) -> None:
        with self._connect() as con:
            self._require(con, exp_id)
            con.execute(_VERDICT_SQL,
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
                raise InputError(f"There is no saved experiment with id '{exp_id}' (in {self.where}).")
            exp = Experiment(
                name=e["name"], id=e["id"], parent_id=e["parent_id"], created=e["created"], updated=e["updated"],
                variants=tuple(PromptVariant(**v) for v in json.loads(e["variants"])),
                rows=tuple(InputRow(r["values"], r["reference"]) for r in json.loads(e["rows"])),
                settings=_settings_from(json.loads(e["settings"])),
                checks=tuple(Check(**c) for c in json.loads(e["checks"])), rubric=e["rubric"],
            )
            for c in con.execute("SELECT * FROM cells WHERE experiment_id=? ORDER BY \"row\"", (exp_id,)):
                cell = Cell(row=c["row"], variant=c["variant"], model_id=c["model_id"], output=c["output"],
                            system=c["system"], user=c["user"], prompt=c["prompt"], new_tokens=c["new_tokens"],
                            prompt_tokens=c["prompt_tokens"], seconds=c["seconds"],
                            first_token_seconds=c["first_token_seconds"], finish_reason=c["finish_reason"],
                            error=c["error"], checks=tuple(bool(x) for x in json.loads(c["checks"])),
                            exact=c["exact"], f1=c["f1"], cosine=c["cosine"], created=c["created"])
                exp.cells[(cell.row, cell.variant, cell.model_id)] = cell
            for v in con.execute("SELECT * FROM votes WHERE experiment_id=? ORDER BY created", (exp_id,)):
                exp.votes[(v["row"], v["pair"], v["voter"])] = Vote(
                    v["row"], Arm(v["a_variant"], v["a_model"]), Arm(v["b_variant"], v["b_model"]), v["choice"],
                    bool(v["blind"]), v["created"], v["voter"])
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
