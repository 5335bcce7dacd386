"""The experiment store: an embedded SQLite database under `playground.paths.data_root()`.

Experiments with templates, inputs, settings, outputs, scores, votes and verdicts; list,
load, create (a fork with what it holds), save, delete. Each call opens its own short
connection, so one store is shared by threads and sessions.

What it leaves out: PostgreSQL (DATABASE_URL) and migrations between schema versions.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playground.errors import InputError, PlaygroundError
from playground.experiments.checks import Check
from playground.experiments.model import (
    Arm, Cell, Experiment, InputRow, JudgeVerdict, RawVerdict, Vote, _row_dict, _settings_dict, _settings_from,
    _variant_dict,
)
from playground.prompts import PromptVariant


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
