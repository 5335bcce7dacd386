"""The judge: a model (or any callable) that reads a rubric, a row and two outputs and picks one.

A judge is any callable `(task, response_1, response_2, rubric) -> RawVerdict`, asked twice
per pair, once in each order (`judge_pair`); a side wins only when both orders pick it, so a
judge that always prefers the first position scores a tie (see `combine` in model).
`model_judge` makes such a callable from a causal LM with JUDGE_PROMPT and keeps its written
reason; `parse_verdict` reads '1', '2' or 'tie' out of its answer.

What it leaves out: loading the judge model (the caller passes it) and win rates (stats).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from playground.errors import InputError
from playground.experiments.model import Arm, Experiment, JudgeVerdict, RawVerdict
from playground.experiments.runner import Generator, _stream_generate
from playground.experiments.votes import _canonical, pair_key
from playground.generate import GenerationSettings
from playground.limits import RUBRIC_CHARS
from playground.prompts import PromptVariant

if TYPE_CHECKING:
    from playground.experiments.store import ExperimentStore


JudgeFn = Callable[[str, str, str, str], RawVerdict]

JUDGE_PROMPT = PromptVariant(
    "judge",
    system="You are a strict, impartial judge of answers. You reply with a verdict on the first line and one "
           "short sentence of reasons on the second.",
    template=(
        "Rubric: {rubric}\n\n"
        "Task input:\n{task}\n\n"
        "Response 1:\n{response_1}\n\n"
        "Response 2:\n{response_2}\n\n"
        "Which response is better by the rubric? First line: 1, 2 or tie. Second line: why."
    ),
)


def task_text(exp: Experiment, row: int) -> str:
    """The row as the judge sees it: its inputs, and the reference answer if there is one."""
    r = exp.rows[row]
    lines = [f"{k}: {v}" for k, v in r.values.items()]
    if r.reference:
        lines.append(f"reference answer: {r.reference}")
    return "\n".join(lines)


def parse_verdict(text: str) -> RawVerdict:
    """Read '1', '2' or 'tie' from a judge's answer: first from its first line, else from
    'response 1/2' anywhere; an answer naming neither is a tie. The rest is the reason."""
    stripped = text.strip()
    first, _, rest = stripped.partition("\n")
    m = re.search(r"\b(tie|1|2)\b", first, flags=re.I)
    if m is None:
        m2 = re.search(r"response\s*(1|2)", stripped, flags=re.I)
        choice = m2.group(1) if m2 else "tie"
        reason = stripped
    else:
        choice = m.group(1).lower()
        reason = rest.strip() or stripped  # the lines after the verdict, or the whole answer
    return RawVerdict(choice, reason[:500], text)


def model_judge(lm, settings: GenerationSettings | None = None, generator: Generator | None = None) -> JudgeFn:
    """A judge made of a causal LM: the rubric, the task and both responses in one prompt (JUDGE_PROMPT)."""
    settings = settings or GenerationSettings(max_new_tokens=48)
    gen = generator or (lambda lm_, text, s, chat, system: _stream_generate(lm_, text, s, chat, system))

    def judge(task: str, response_1: str, response_2: str, rubric: str) -> RawVerdict:
        p = JUDGE_PROMPT.render({"rubric": rubric, "task": task, "response_1": response_1 or "(empty)",
                                 "response_2": response_2 or "(empty)"})
        text, system = p.user, p.system or None
        result = gen(lm, text, settings, True, system)
        return parse_verdict(result.text)

    return judge


def judge_pair(exp: Experiment, row: int, x: Arm, y: Arm, judge: JudgeFn, judge_model: str) -> JudgeVerdict:
    """Ask the judge twice: x as response 1, then y as response 1."""
    cx, cy = exp.cell(row, x), exp.cell(row, y)
    if cx is None or cy is None or not (cx.ok and cy.ok):
        raise InputError(f"Row {row + 1} lacks an output for {exp.arm_label(x)} or {exp.arm_label(y)}: run first.")
    task = task_text(exp, row)
    first = judge(task, cx.output, cy.output, exp.rubric)
    second = judge(task, cy.output, cx.output, exp.rubric)
    for v in (first, second):
        if v.choice not in ("1", "2", "tie"):
            raise InputError(f"A judge answers '1', '2' or 'tie' (got {v.choice!r}).")
    return JudgeVerdict(row, x, y, judge_model, first, second, time.time())


def run_judge(exp: Experiment, judge: JudgeFn, judge_model: str, store: ExperimentStore | None = None,
              pairs: Sequence[tuple[Arm, Arm]] | None = None, rows: Iterable[int] | None = None,
              on_verdict: Callable[[JudgeVerdict, int, int], None] | None = None) -> list[JudgeVerdict]:
    """Judge every row with both outputs for each pair (all pairs by default); save each verdict."""
    if not exp.rubric.strip():
        raise InputError("The judge needs a rubric: write what makes a response better.")
    RUBRIC_CHARS.check(len(exp.rubric), "The judge's rubric")
    pairs = [(_canonical(exp, x, y)) for x, y in (pairs or exp.pairs())]
    todo = [(r, x, y) for r in (rows if rows is not None else range(len(exp.rows))) for x, y in pairs
            if (c1 := exp.cell(r, x)) is not None and c1.ok and (c2 := exp.cell(r, y)) is not None and c2.ok]
    if not todo:
        raise InputError("Nothing to judge yet: run the experiment so that rows have outputs to compare.")
    out = []
    for i, (r, x, y) in enumerate(todo, start=1):
        v = judge_pair(exp, r, x, y, judge, judge_model)
        key = pair_key(x, y)
        exp.verdicts[(r, key, judge_model)] = v
        if store is not None:
            store.save_verdict(exp.id, v, key)
        out.append(v)
        if on_verdict is not None:
            on_verdict(v, i, len(todo))
    return out
