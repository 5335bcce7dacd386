"""Export of an experiment: one flat record per cell (`to_records`, `to_csv`), or everything
with the summary (`to_dict`, `to_json`).

What it leaves out: importing an export back (the database is the way to keep experiments).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import Any

from playground.experiments.model import Cell, Experiment, JudgeVerdict, Vote
from playground.experiments.stats import ArmSummary, summarize


def to_records(exp: Experiment) -> list[dict[str, Any]]:
    """One flat record per cell (the CSV's rows), in grid order."""
    out = []
    for i, r in enumerate(exp.rows):
        for arm in exp.arms:
            c = exp.cell(i, arm)
            rec: dict[str, Any] = {"experiment": exp.id, "row": i + 1}
            rec.update({k: v for k, v in r.values.items()})
            rec["reference"] = r.reference or ""
            rec.update(variant=arm.variant, model=arm.model_id, output=c.output if c else "",
                       error=(c.error or "") if c else "not run", new_tokens=c.new_tokens if c else "",
                       prompt_tokens=c.prompt_tokens if c else "", seconds=round(c.seconds, 4) if c else "",
                       finish_reason=c.finish_reason if c else "")
            for j, chk in enumerate(exp.checks):
                rec[f"check: {chk.label}"] = (c.checks[j] if c and len(c.checks) == len(exp.checks) else "")
            for k in ("exact", "f1", "cosine"):
                val = getattr(c, k) if c else None
                rec[k] = "" if val is None else round(val, 4)
            out.append(rec)
    return out


def to_csv(exp: Experiment) -> str:
    records = to_records(exp)
    buf = io.StringIO()
    if records:
        fields: dict[str, None] = {}
        for r in records:
            fields.update(dict.fromkeys(r))
        w = csv.DictWriter(buf, fieldnames=list(fields))
        w.writeheader()
        w.writerows(records)
    return buf.getvalue()


def to_dict(exp: Experiment) -> dict[str, Any]:
    """Everything: templates, inputs, settings, checks, cells, votes, verdicts, and the summary."""
    return {
        "id": exp.id, "name": exp.name, "parent_id": exp.parent_id, "created": exp.created, "updated": exp.updated,
        **exp.spec(), "checks": [dataclasses.asdict(c) for c in exp.checks], "rubric": exp.rubric,
        "cells": [_cell_dict(c) for c in exp.cells.values()],
        "votes": [_vote_dict(v) for v in exp.votes.values()],
        "verdicts": [_verdict_dict(v) for v in exp.verdicts.values()],
        "summary": [_summary_dict(s) for s in summarize(exp)],
    }


def to_json(exp: Experiment) -> str:
    return json.dumps(to_dict(exp), indent=2, ensure_ascii=False)


def _summary_dict(s: ArmSummary) -> dict:
    d = dataclasses.asdict(s)
    d["arm"] = s.arm.key
    return d


def _cell_dict(c: Cell) -> dict:
    d = dataclasses.asdict(c)
    d["checks"] = list(c.checks)
    for kept_in_memory in ("logprobs", "token_ids", "origin"):  # not saved, so not exported either
        d.pop(kept_in_memory, None)
    return d


def _vote_dict(v: Vote) -> dict:
    return {"row": v.row, "voter": v.voter, "a": v.a.key, "b": v.b.key, "choice": v.choice, "blind": v.blind, "created": v.created,
            "winner": v.winner.key if v.winner else None}


def _verdict_dict(v: JudgeVerdict) -> dict:
    return {"row": v.row, "x": v.x.key, "y": v.y.key, "judge_model": v.judge_model,
            "x_first": dataclasses.asdict(v.first), "y_first": dataclasses.asdict(v.second),
            "outcome": v.outcome, "winner": v.winner.key if v.winner else None, "consistent": v.consistent,
            "created": v.created}
