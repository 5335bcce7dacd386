"""The app's one database: an SQLite file by default, PostgreSQL when ``DATABASE_URL`` is set.

Experiments (cells, votes, verdicts) live in it; with DATABASE_URL, saved RAG setups and the
endpoints too (on SQLite those keep their own files, `rag/setups.py` and `endpoints.py`). One schema for both
engines, built by numbered migrations (`MIGRATIONS`) and recorded in a ``schema_version``
table, so a database written by an older version of the app is upgraded in place the first
time a newer one opens it, with nothing lost. The SQL is written once with ``?`` placeholders
and ``ON CONFLICT`` upserts, which both engines understand; `Database.connect` hands out a
connection whose ``execute`` takes that SQL on either engine, inside one transaction.

Several app processes may share one PostgreSQL database: each call opens its own short
connection and every write is one transaction keyed by the rows' primary keys, so two people
writing at once (two votes on one experiment) both land. Migrations take a lock (an advisory
lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so two processes starting at once do not
both upgrade.

The URL may carry a password: it is shown only through `playground.secrets.redact`.

What it leaves out: a connection pool (a loopback connection costs a few milliseconds, well
under one generated token), and the Qdrant vectors (``QDRANT_URL``, see ``rag/store.py``).

>>> Database(url="postgresql://team:s3cret@db.example:5432/playground").where
'postgresql://***@db.example:5432/playground'
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playground.errors import InputError, PlaygroundError
from playground.secrets import redact

ENV = "DATABASE_URL"
SCHEMES = ("postgresql://", "postgres://")
LOCK_ID = 15_2026  # the advisory lock that serialises migrations on PostgreSQL
ENDPOINTS_LOCK = 15_2027  # ... and changes to the list of endpoints

# Version 1: the experiments tables as the app wrote them before versions were recorded (an
# SQLite database with these tables and no schema_version table is a version-1 database).
# "row" and "user" are quoted: "user" is reserved in PostgreSQL. DOUBLE PRECISION has REAL
# affinity in SQLite, and keeps Unix times to the microsecond in PostgreSQL (its REAL would not).
_V1 = """
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, parent_id TEXT, created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    variants TEXT NOT NULL, rows TEXT NOT NULL, settings TEXT NOT NULL, checks TEXT NOT NULL, rubric TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    "row" INTEGER NOT NULL, variant TEXT NOT NULL, model_id TEXT NOT NULL,
    output TEXT NOT NULL, system TEXT, "user" TEXT NOT NULL, prompt TEXT NOT NULL,
    new_tokens INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, seconds DOUBLE PRECISION NOT NULL,
    first_token_seconds DOUBLE PRECISION NOT NULL, finish_reason TEXT NOT NULL, error TEXT,
    checks TEXT NOT NULL, exact DOUBLE PRECISION, f1 DOUBLE PRECISION, cosine DOUBLE PRECISION,
    created DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (experiment_id, "row", variant, model_id)
);
CREATE TABLE IF NOT EXISTS votes (
    experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    "row" INTEGER NOT NULL, pair TEXT NOT NULL,
    a_variant TEXT NOT NULL, a_model TEXT NOT NULL, b_variant TEXT NOT NULL, b_model TEXT NOT NULL,
    choice TEXT NOT NULL, blind INTEGER NOT NULL, created DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (experiment_id, "row", pair)
);
CREATE TABLE IF NOT EXISTS verdicts (
    experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    "row" INTEGER NOT NULL, pair TEXT NOT NULL, judge_model TEXT NOT NULL,
    x_variant TEXT NOT NULL, x_model TEXT NOT NULL, y_variant TEXT NOT NULL, y_model TEXT NOT NULL,
    first_choice TEXT NOT NULL, first_reason TEXT NOT NULL, first_text TEXT NOT NULL,
    second_choice TEXT NOT NULL, second_reason TEXT NOT NULL, second_text TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (experiment_id, "row", pair, judge_model)
);
"""

# Version 2: a vote belongs to a voter (one per browser session), so two people voting on one
# row both count: votes gets a voter column in its key (the table is rebuilt, as SQLite cannot
# change a primary key; the votes already cast become voter ""). Saved RAG setups and endpoints
# join the experiments (each had a file of its own; on SQLite they keep it, these tables serve
# PostgreSQL), and the list reads in order of change.
_V2 = """
CREATE TABLE votes_v2 (
    experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    "row" INTEGER NOT NULL, pair TEXT NOT NULL, voter TEXT NOT NULL DEFAULT '',
    a_variant TEXT NOT NULL, a_model TEXT NOT NULL, b_variant TEXT NOT NULL, b_model TEXT NOT NULL,
    choice TEXT NOT NULL, blind INTEGER NOT NULL, created DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (experiment_id, "row", pair, voter)
);
INSERT INTO votes_v2 (experiment_id, "row", pair, voter, a_variant, a_model, b_variant, b_model, choice, blind, created)
    SELECT experiment_id, "row", pair, '', a_variant, a_model, b_variant, b_model, choice, blind, created FROM votes;
DROP TABLE votes;
ALTER TABLE votes_v2 RENAME TO votes;
CREATE TABLE IF NOT EXISTS setups (name TEXT PRIMARY KEY, body TEXT NOT NULL, saved_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (name TEXT PRIMARY KEY, position INTEGER NOT NULL, url TEXT NOT NULL,
    key_env TEXT NOT NULL, timeout DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS experiments_by_updated ON experiments (updated);
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2)  # MIGRATIONS[i] takes a database from version i to i + 1
VERSION = len(MIGRATIONS)
SCHEMA = "".join(MIGRATIONS)


_SHARED: dict[tuple[str, str], Database] = {}


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


class _PgConnection:
    """A psycopg connection that takes the SQL written for SQLite: ``?`` placeholders."""

    def __init__(self, con: Any) -> None:
        self._con = con

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._con.execute(sql.replace("?", "%s"), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._con.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)


class Database:
    """Where the app's tables live: `Database(path=...)` (SQLite) or `Database(url=...)` (PostgreSQL)."""

    def __init__(self, path: str | Path | None = None, url: str | None = None, label: str = "app") -> None:
        if (path is None) == (url is None):
            raise ValueError("Database needs exactly one of path (SQLite) and url (PostgreSQL).")
        self.label = label
        self.url = url
        self.path = Path(path) if path is not None else None
        if url is not None:
            if not url.startswith(SCHEMES):
                raise InputError(f"{ENV} is {redact(url)!r}: it must be a PostgreSQL URL such as "
                                 "postgresql://user:password@host:5432/dbname (or unset it to use SQLite).")
            try:
                import psycopg  # noqa: F401
            except ImportError as exc:
                raise PlaygroundError(f"{ENV} is set but the PostgreSQL driver is missing: "
                                      "pip install 'psycopg[binary]==3.3.9' (see requirements.txt).") from exc
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrated = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, default_path: str | Path | None = None,
                 label: str = "app") -> Database:
        """PostgreSQL when DATABASE_URL is set (and not blank), else the SQLite file `default_path`
        (default: data_root()/experiments.sqlite3)."""
        env = os.environ if environ is None else environ
        url = (env.get(ENV) or "").strip()
        if url:
            key = (url, label)
            if key not in _SHARED:  # one object per URL: its schema is checked once per process
                _SHARED[key] = cls(url=url, label=label)
            return _SHARED[key]
        if default_path is None:
            from playground.paths import data_root

            default_path = data_root() / "experiments.sqlite3"
        return cls(path=default_path, label=label)

    @property
    def kind(self) -> str:
        return "postgresql" if self.url else "sqlite"

    @property
    def where(self) -> str:
        """The database's place for a message: the file, or the URL with its password masked."""
        return redact(self.url) if self.url else str(self.path)

    def _fail(self, exc: Exception, opening: bool) -> PlaygroundError:
        detail = redact(str(exc).strip(), secrets=[self._password()])
        if opening:
            hint = ("Check that the server runs and DATABASE_URL names it, with the right user and password."
                    if self.url else "Check that the folder is writable.")
            return PlaygroundError(f"The {self.label} database {self.where} cannot be opened: {detail}. {hint}")
        hint = ("" if self.url else " If the file is damaged, move it away and the app starts a new one.")
        return PlaygroundError(f"The {self.label} database {self.where} failed: {detail}.{hint}")

    def _password(self) -> str | None:
        if not self.url:
            return None
        from urllib.parse import urlsplit

        try:
            return urlsplit(self.url).password
        except ValueError:
            return None

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A connection in one transaction: committed when the block ends, rolled back on error.
        Rows read by name (``row["name"]``) on both engines."""
        if self.url:
            yield from self._pg()
        else:
            yield from self._sqlite()

    def _sqlite(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as exc:
            raise self._fail(exc, opening=True) from exc
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across an app crash, one fsync less
            self._migrate_sqlite(con)  # every time: a new or deleted file gets its tables back
            with con:
                yield con
        except sqlite3.DatabaseError as exc:
            raise self._fail(exc, opening=False) from exc
        finally:
            con.close()

    def _pg(self) -> Iterator[_PgConnection]:
        import psycopg
        from psycopg.rows import dict_row

        try:
            con = psycopg.connect(self.url, row_factory=dict_row, connect_timeout=10, autocommit=True)
        except psycopg.Error as exc:
            raise self._fail(exc, opening=True) from None  # `from None`: the driver's error may quote the URL
        try:
            if not self._migrated:
                self._migrate_pg(con)
                self._migrated = True
            with con.transaction():
                yield _PgConnection(con)
        except psycopg.Error as exc:
            raise self._fail(exc, opening=False) from None
        finally:
            con.close()

    # --- migrations ---------------------------------------------------------------------------------
    def version(self) -> int:
        """The schema version the database is at (after opening it, `VERSION`)."""
        with self.connect() as con:
            return int(con.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()["v"])

    @staticmethod
    def _found_version(con: Any, has_table) -> int:
        if has_table("schema_version"):
            row = con.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
            return int(row["v"] or 0)
        return 1 if has_table("experiments") else 0  # tables written before versions were recorded

    def _migrate_sqlite(self, con: sqlite3.Connection) -> None:
        def has_table(name: str) -> bool:
            return con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None

        if has_table("schema_version") and self._found_version(con, has_table) >= VERSION:
            return  # the common case: one query
        con.execute("BEGIN IMMEDIATE")  # the write lock: a second process waits, then finds the work done
        try:
            self._apply(con, self._found_version(con, has_table))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _migrate_pg(self, con: Any) -> None:
        def has_table(name: str) -> bool:
            return con.execute("SELECT to_regclass(%s) AS t", (name,)).fetchone()["t"] is not None

        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
            self._apply(_PgConnection(con), self._found_version(con, has_table))

    @staticmethod
    def _apply(con: Any, found: int) -> None:
        con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied DOUBLE PRECISION)")
        if found and con.execute("SELECT 1 FROM schema_version WHERE version=?", (found,)).fetchone() is None:
            con.execute("INSERT INTO schema_version VALUES (?, NULL)", (found,))  # record what was there
        for version in range(found, VERSION):
            for stmt in _statements(MIGRATIONS[version]):
                con.execute(stmt)
            con.execute("INSERT INTO schema_version VALUES (?, ?)", (version + 1, _now()))


def _now() -> float:
    import time

    return time.time()
