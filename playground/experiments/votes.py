"""Human votes: which of two outputs for a row, shown as A and B, is better.

A vote is A / B / tie / both bad, for one row and one pair of arms, by one voter (the page gives
each browser session an id; a notebook votes as ""): voting again replaces your vote, and the
votes of several people on one row all count (two people voting on one experiment at once, from
two app processes, both land).
In blind mode which arm shows as "A" is a stable pseudo-random choice per (experiment, row,
pair) (`blind_swap`): the same row always shows the same way, in every session, and about
half the rows show each way. `next_row` picks the row to vote on next.

What it leaves out: win rates (stats) and the judge's verdicts (judge).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from playground.errors import InputError
from playground.experiments.model import VOTE_CHOICES, Arm, Experiment, Vote

if TYPE_CHECKING:
    from playground.experiments.store import ExperimentStore


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
         store: ExperimentStore | None = None, voter: str = "") -> Vote:
    """Record (or replace) `voter`'s vote on this row for the pair a, b. choice: A | B | tie | both bad."""
    if choice not in VOTE_CHOICES:
        raise InputError(f"A vote is one of {', '.join(VOTE_CHOICES)} (got {choice!r}).")
    if not 0 <= row < len(exp.rows):
        raise InputError(f"Row {row + 1} does not exist (the experiment has {len(exp.rows)} rows).")
    for arm in (a, b):
        c = exp.cell(row, arm)
        if c is None or not c.ok:
            raise InputError(f"Row {row + 1} has no output for {exp.arm_label(arm)} yet: run the experiment first.")
    v = Vote(row, a, b, choice, blind, time.time(), voter)
    exp.votes[(row, pair_key(*_canonical(exp, a, b)), voter)] = v
    if store is not None:
        store.save_vote(exp.id, v, pair_key(*_canonical(exp, a, b)))
    return v


def vote_for(exp: Experiment, row: int, x: Arm, y: Arm, voter: str | None = None) -> Vote | None:
    """`voter`'s vote on this row for the pair; with voter=None, the latest vote by anyone."""
    pair = pair_key(*_canonical(exp, x, y))
    if voter is not None:
        return exp.votes.get((row, pair, voter))
    found = [v for (r, p, _), v in exp.votes.items() if r == row and p == pair]
    return max(found, key=lambda v: v.created) if found else None


def votable_rows(exp: Experiment, x: Arm, y: Arm) -> list[int]:
    """The rows that have an output from both arms."""
    return [i for i in range(len(exp.rows)) if all((c := exp.cell(i, arm)) is not None and c.ok for arm in (x, y))]


def next_row(exp: Experiment, x: Arm, y: Arm, rows: Sequence[int], after: int | None = None,
             voter: str | None = None) -> int | None:
    """The row to vote on next: the first of `rows` after `after` (wrapping round) with no vote for
    this pair yet (by `voter`; by anyone with voter=None); with after=None, the first unvoted row.
    None when every row has a vote."""
    rows = list(rows)
    if after is not None and after in rows:
        i = rows.index(after)
        rows = rows[i + 1:] + rows[:i]
    return next((r for r in rows if vote_for(exp, r, x, y, voter) is None), None)
