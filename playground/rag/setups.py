"""Saved RAG setups, in an SQLite file under ``data_root()`` (``rag_setups.sqlite``): they survive a restart.
When ``DATABASE_URL`` is set they live in that PostgreSQL database instead (its ``setups`` table,
see `playground.database`), shared by every app process.

A setup is stored as the JSON of `Setup.to_dict()` under a name the user picks; saving under an
existing name is refused (`WouldReplaceError`) unless `overwrite=True` says to replace it, so a
notebook user cannot lose a setup by accident either. Reading checks every field again (`Setup.from_dict`), so a setup saved
by an older version that no longer validates is reported, not loaded half-way.

What it leaves out: the collections themselves (they live in Qdrant; a setup only names how to
rebuild or find its collection).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from playground.database import ENV, Database
from playground.errors import InputError, StoreError, WouldReplaceError
from playground.paths import data_root
from playground.rag.pipeline import Setup

MAX_NAME = 80


@dataclass(frozen=True)
class SavedSetup:
    name: str
    setup: Setup
    saved_at: float  # Unix time


def db_path() -> Path:
    return data_root() / "rag_setups.sqlite"


def where() -> str:
    """Where saved setups live, for a caption: the shared database (its URL masked) or the file's name."""
    if (os.environ.get(ENV) or "").strip():
        return f"the shared database {Database.from_env(label='setups').where}"
    return f"{db_path().name} under the data folder"


def _connect(path: Path | None = None) -> sqlite3.Connection:
    p = Path(path) if path else db_path()
    try:
        con = sqlite3.connect(p, timeout=10)
        con.row_factory = sqlite3.Row
        con.execute("CREATE TABLE IF NOT EXISTS setups (name TEXT PRIMARY KEY, body TEXT NOT NULL, saved_at REAL NOT NULL)")
    except sqlite3.Error as exc:
        raise StoreError(f"The setups database {p} cannot be opened: {exc}.") from exc
    return con


@contextlib.contextmanager
def _db(path: Path | None) -> Iterator[sqlite3.Connection]:
    """A connection that commits on success and is always closed: the shared database when
    DATABASE_URL is set and no `path` is given, else the SQLite file."""
    if path is None and (os.environ.get(ENV) or "").strip():
        with Database.from_env(label="setups").connect() as con:
            yield con
        return
    con = _connect(path)
    try:
        with con:
            yield con
    finally:
        con.close()


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise InputError("Give the setup a name to save it under.")
    if len(name) > MAX_NAME:
        raise InputError(f"The setup name is {len(name)} characters; at most {MAX_NAME}.")
    return name


def exists(name: str, path: Path | None = None) -> bool:
    """Whether a setup is saved under `name` (as `save` would store it: trimmed)."""
    with _db(path) as con:
        return con.execute("SELECT 1 FROM setups WHERE name = ?", ((name or "").strip(),)).fetchone() is not None


def save(name: str, setup: Setup, path: Path | None = None, overwrite: bool = False) -> SavedSetup:
    """Save `setup` under `name`; a setup already saved under that name is replaced only with `overwrite`."""
    name = _check_name(name)
    setup.check()
    now = time.time()
    with _db(path) as con:
        if not overwrite and con.execute("SELECT 1 FROM setups WHERE name = ?", (name,)).fetchone() is not None:
            raise WouldReplaceError(f"A setup named {name!r} is already saved; nothing was replaced. "
                                    "Pick another name, or confirm to replace it.")
        con.execute("INSERT INTO setups (name, body, saved_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                    " body=excluded.body, saved_at=excluded.saved_at",
                    (name, json.dumps(setup.to_dict()), now))
    return SavedSetup(name, setup, now)


def load(name: str, path: Path | None = None) -> SavedSetup:
    with _db(path) as con:
        row = con.execute("SELECT body, saved_at FROM setups WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise InputError(f"There is no saved setup named {name!r}.")
    try:
        body = json.loads(row["body"])
    except ValueError as exc:
        raise InputError(f"The saved setup {name!r} is damaged: {exc}.") from exc
    return SavedSetup(name, Setup.from_dict(body), float(row["saved_at"]))


def names(path: Path | None = None) -> list[str]:
    """Saved setup names, most recent first."""
    with _db(path) as con:
        return [r["name"] for r in con.execute("SELECT name FROM setups ORDER BY saved_at DESC, name")]


def list_saved(path: Path | None = None) -> list[SavedSetup]:
    """Every saved setup that still reads; most recent first."""
    out: list[SavedSetup] = []
    for n in names(path):
        try:
            out.append(load(n, path))
        except InputError:
            continue
    return out


def delete(name: str, path: Path | None = None) -> None:
    with _db(path) as con:
        cur = con.execute("DELETE FROM setups WHERE name = ?", (name,))
    if cur.rowcount == 0:
        raise InputError(f"There is no saved setup named {name!r}.")
