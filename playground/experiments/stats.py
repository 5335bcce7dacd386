"""Statistics of an experiment: per arm, pass rates, mean scores, and win rates with intervals.

`summarize` gives one `ArmSummary` per arm. Win rates (`win_rate`) count ties (and "both
bad") as half a win, with a 95% Wilson score interval (`wilson_interval`), for the human
votes and the judge's verdicts separately.

What it leaves out: significance tests between more than two arms, and charts
(components/experiments.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from playground.errors import InputError
from playground.experiments.model import Arm, Experiment

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal


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
