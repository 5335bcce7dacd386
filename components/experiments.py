"""Rendering A/B experiments: template editors side by side, the input and checks tables, the
grid of outputs (rows x arms) filling as cells finish, a cell's details with its rendered
prompt on demand, a word diff between two cells, the voting panel, the judge's verdicts,
and the summary table and charts (plotly).

Everything that reaches HTML goes through `html.escape` (an output can be `<script>`).

What it leaves out: running, scoring, judging and saving (playground.experiments) and
loading models (components.models / components.cache).
"""

from __future__ import annotations

import difflib
import html
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from components import answer_tokens
from playground import experiments as core
from playground.errors import PlaygroundError, describe
from playground.experiments import Arm, ArmSummary, Cell, Check, Experiment
from playground.limits import REGEX_CHARS, RENDER_CHARS, RENDER_SECONDS, SYSTEM_CHARS, TEMPLATE_CHARS
from playground.prompts import FORMATS, PromptVariant

COLOURS = ["#2563eb", "#d97706", "#059669", "#db2777"]
FORMAT_HELP = {
    "f-string": "Python format: {question}. Write a literal brace as {{ or }}.",
    "mustache": "{{question}} (HTML-escaped), {{{question}}} as it is, sections {{#items}}…{{/items}}.",
    "jinja2": "{{ question }}, {% if context %}…{% endif %}, filters like {{ q | upper }}. Sandboxed.",
}
CHOICE_LABELS = {"A": "A is better", "B": "B is better", "tie": "Tie", "both bad": "Both bad"}


# --- editors ----------------------------------------------------------------------------------

def template_editors(n: int, key: Callable[[str, int], str]) -> tuple[list[PromptVariant], dict[str, str]]:
    """n template editors side by side; key(field, i) names each widget ("fmt", "sys", "tpl").

    Returns the variants (named A, B, ...) and the error of each invalid one, by name. The
    variables each template uses are listed under it.
    """
    variants: list[PromptVariant] = []
    errors: dict[str, str] = {}
    for i, col in enumerate(st.columns(n)):
        name = core.VARIANT_NAMES[i]
        with col:
            st.markdown(f"<span style='color:{COLOURS[i]};font-weight:700'>■</span> **Template {name}**",
                        unsafe_allow_html=True)
            fmt = st.selectbox("Format", FORMATS, key=key("fmt", i), help=FORMAT_HELP[st.session_state[key("fmt", i)]])
            st.text_area("System message (optional)", key=key("sys", i), height=68,
                         help="Sent as the chat's system turn; a model without a chat template gets it before the "
                              f"prompt. {SYSTEM_CHARS.text}.")
            st.text_area("Template", key=key("tpl", i), height=130,
                         help=f"{TEMPLATE_CHARS.text}; it fills in within {RENDER_SECONDS.value:g} seconds and gives "
                              f"{RENDER_CHARS.text} per row.")
            v = PromptVariant(name, st.session_state[key("tpl", i)], st.session_state[key("sys", i)], fmt)
            try:
                names = v.variables
                st.caption("Variables: " + (", ".join(f"`{x}`" for x in names) if names else "none (every row gets the same prompt)"))
            except PlaygroundError as exc:
                errors[name] = describe(exc)
                st.error(describe(exc))
            variants.append(v)
    return variants, errors


def preview(variants: Sequence[PromptVariant], values: dict[str, Any]) -> None:
    """What each valid template gives for one row (no model involved). A template that hits a
    bound (it loops too long, gives too much) says so as a warning."""
    for i, (v, col) in enumerate(zip(variants, st.columns(len(variants)), strict=True)):
        with col:
            r, error, bound = core.preview(v, values)
            if r is None:
                (st.warning if bound else st.caption)(error)
                continue
            text = (f"[system] {r.system}\n\n" if r.system else "") + r.user
            st.code(text, language=None, wrap_lines=True)


def frame(records: Sequence[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """A string table with exactly these columns (missing values empty) for st.data_editor."""
    data = [{c: ("" if r.get(c) is None else str(r.get(c))) for c in columns} for r in records]
    return pd.DataFrame(data, columns=list(columns), dtype=object)


def records_of(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Editor rows back to plain dicts (empty cells -> '')."""
    out = []
    for rec in df.to_dict("records"):
        out.append({str(k): ("" if v is None or (not isinstance(v, (list, dict)) and pd.isna(v)) else v)
                    for k, v in rec.items()})
    return out


def checks_of(df: pd.DataFrame) -> tuple[list[Check], list[str]]:
    """Checks from the checks editor, and the problem of each row that is not a valid check."""
    checks, problems = [], []
    for i, rec in enumerate(df.to_dict("records"), start=1):
        kind = rec.get("kind")
        if not kind or (isinstance(kind, float) and math.isnan(kind)):
            continue

        def num(v):
            if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
                return None
            return int(v)

        unit = rec.get("unit") if isinstance(rec.get("unit"), str) and rec.get("unit") else "characters"
        value = rec.get("value") if isinstance(rec.get("value"), str) else ""
        c = Check(kind=str(kind), value=value, lo=num(rec.get("min")), hi=num(rec.get("max")), unit=unit)
        try:
            checks.append(c.validate())
        except PlaygroundError as exc:
            problems.append(f"Check {i}: {describe(exc)}")
    return checks, problems


def check_records(checks: Sequence[Check]) -> list[dict[str, Any]]:
    return [{"kind": c.kind, "value": c.value, "min": c.lo, "max": c.hi, "unit": c.unit} for c in checks]


def checks_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The checks editor's table: kind, value, min, max, unit (min / max as nullable integers)."""
    df = pd.DataFrame(list(records), columns=["kind", "value", "min", "max", "unit"])
    for col in ("min", "max"):
        df[col] = pd.array([None if (v is None or pd.isna(v) or v == "") else int(v) for v in df[col]], dtype="Int64")
    for col in ("kind", "value", "unit"):
        df[col] = df[col].astype(object).where(df[col].notna(), "")
    return df


CHECK_COLUMNS = {
    "kind": st.column_config.SelectboxColumn("Check", options=list(core.CHECK_KINDS), required=True, width="small"),
    "value": st.column_config.TextColumn("Text or regex", help="for contains / not contains / regex; "
                                         f"{REGEX_CHARS.text}; a regex runs on RE2 (no backreferences or lookaround)"),
    "min": st.column_config.NumberColumn("Min", min_value=0, step=1, help="length checks"),
    "max": st.column_config.NumberColumn("Max", min_value=0, step=1, help="length checks"),
    "unit": st.column_config.SelectboxColumn("Unit", options=list(core.LENGTH_UNITS), width="small"),
}


# --- the grid ---------------------------------------------------------------------------------

def short(text: str, n: int = 60) -> str:
    """One line of at most n characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def grid_frame(exp: Experiment) -> pd.DataFrame:
    """Rows x (inputs, reference, one column per arm). A cell not run yet is empty; a failed one says so."""
    records = []
    for i, r in enumerate(exp.rows):
        rec: dict[str, Any] = {"#": i + 1}
        rec.update({k: str(v) for k, v in r.values.items()})
        if exp.has_reference:
            rec["reference"] = r.reference or ""
        for arm in exp.arms:
            c = exp.cell(i, arm)
            rec[exp.arm_label(arm)] = "" if c is None else (c.output if c.ok else f"⚠ {c.error}")
        records.append(rec)
    return pd.DataFrame(records)


def grid(exp: Experiment, key: str | None = None) -> None:
    df = grid_frame(exp)
    config = {exp.arm_label(a): st.column_config.TextColumn(exp.arm_label(a), help="the output; pick the cell under "
                                                            "Cell details for all of it") for a in exp.arms}
    config["#"] = st.column_config.NumberColumn("#", width="small")
    st.dataframe(df, hide_index=True, column_config=config, key=key)


def cell_options(exp: Experiment) -> list[str]:
    return [f"{i}|{a.key}" for i in range(len(exp.rows)) for a in exp.arms]


def cell_label(exp: Experiment, option: str) -> str:
    row, arm = parse_cell_option(exp, option)
    return f"Row {row + 1} · {exp.arm_label(arm)}"


def parse_cell_option(exp: Experiment, option: str) -> tuple[int, Arm]:
    row, key = option.split("|", 1)
    arm = next((a for a in exp.arms if a.key == key), exp.arms[0])
    return int(row), arm


def cell_details(exp: Experiment, cell: Cell | None, show_prompt_key: str, shade: str = "off") -> None:
    """A cell's output (token by token when it was generated in this session), cost, checks and scores;
    its rendered prompt behind a toggle."""
    if cell is None:
        st.info("Not generated yet: press Run.")
        return
    if not cell.ok:
        st.error(cell.error)
        return
    answer_tokens.show(cell.logprobs, cell.token_ids, cell.origin, cell.output or "(empty output)", shade)
    a, b, c, d = st.columns(4)
    a.metric("New tokens", f"{cell.new_tokens:,}")
    b.metric("Prompt tokens", f"{cell.prompt_tokens:,}")
    c.metric("Latency", f"{cell.seconds:.2f} s", help=f"first token after {cell.first_token_seconds:.2f} s")
    d.metric("Stopped", cell.finish_reason or "—")
    marks = [f"{':green-badge[pass]' if ok else ':red-badge[fail]'} {chk.label}"
             for chk, ok in zip(exp.checks, cell.checks, strict=False)]
    if marks:
        st.markdown(" · ".join(marks))
    if cell.f1 is not None:
        cos = "—" if cell.cosine is None else f"{cell.cosine:.3f}"
        st.caption(f"Against the reference: exact match {cell.exact:.0f} · token F1 {cell.f1:.3f} · embedding cosine {cos}")
    if st.toggle("Show the rendered prompt", key=show_prompt_key,
                 help="the exact text the model received, chat template and special tokens included"):
        st.code(cell.prompt, language=None, wrap_lines=True)


def word_diff_html(left: str, right: str) -> str:
    """Word-level diff (difflib): words only in `left` struck through in red, words only in `right` in green."""
    a, b = re.findall(r"\S+|\n", left), re.findall(r"\S+|\n", right)
    pieces = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            pieces.append(html.escape(" ".join(a[i1:i2])))
            continue
        if i2 > i1:
            pieces.append(f"<del style='background:#fde2e2;color:#991b1b'>{html.escape(' '.join(a[i1:i2]))}</del>")
        if j2 > j1:
            pieces.append(f"<ins style='background:#dcfce7;color:#166534;text-decoration:none'>"
                          f"{html.escape(' '.join(b[j1:j2]))}</ins>")
    body = " ".join(pieces).replace(" \n ", "\n")
    return f"<div style='white-space:pre-wrap;line-height:1.7'>{body}</div>"


def diff_view(left: Cell | None, right: Cell | None) -> None:
    if left is None or right is None or not (left.ok and right.ok):
        st.info("Pick two cells that have outputs.")
        return
    ratio = difflib.SequenceMatcher(a=left.output.split(), b=right.output.split(), autojunk=False).ratio()
    st.caption(f"{ratio:.0%} of words in common. Red: only in the first cell; green: only in the second.")
    st.markdown(word_diff_html(left.output, right.output), unsafe_allow_html=True)


# --- votes and verdicts -----------------------------------------------------------------------

def inputs(row: core.InputRow) -> None:
    """A row's input values (and reference), escaped."""
    lines = [f"**{html.escape(str(k))}:** {html.escape(str(v))}" for k, v in row.values.items()]
    st.markdown("  \n".join(lines), unsafe_allow_html=False)


def output_box(title: str, text: str, colour: str) -> None:
    st.markdown(f"<span style='color:{colour};font-weight:700'>■</span> **{html.escape(title)}**",
                unsafe_allow_html=True)
    with st.container(border=True):
        st.text(text or "(empty output)")


def verdicts_frame(exp: Experiment) -> pd.DataFrame:
    label = {"1": "response 1", "2": "response 2", "tie": "tie"}
    rows = []
    for v in exp.verdicts.values():
        rows.append({
            "#": v.row + 1, "pair": f"{exp.arm_label(v.x)} vs {exp.arm_label(v.y)}", "judge": v.judge_model,
            f"{'x'} first": label.get(v.first.choice, v.first.choice),
            "swapped": label.get(v.second.choice, v.second.choice),
            "winner": exp.arm_label(v.winner) if v.winner else "tie",
            "consistent": v.consistent, "reason (x first)": v.first.reason, "reason (swapped)": v.second.reason,
        })
    return pd.DataFrame(rows)


def verdicts_table(exp: Experiment) -> None:
    df = verdicts_frame(exp)
    if df.empty:
        st.caption("No verdicts yet.")
        return
    st.dataframe(df, hide_index=True, column_config={
        "x first": st.column_config.TextColumn("x shown first", help="the pair's first template shown as response 1"),
        "swapped": st.column_config.TextColumn("swapped", help="the same pair, the other way round"),
        "consistent": st.column_config.CheckboxColumn("same both ways"),
    })


# --- summary ----------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def _num(x: float | None, fmt: str = "{:.3f}") -> str:
    return "—" if x is None else fmt.format(x)


def _wr(w: core.WinRate) -> str:
    if w.rate is None:
        return "—"
    return f"{w.rate:.0%} [{w.low:.0%}, {w.high:.0%}] (n={w.n:g})"


def summary_frame(exp: Experiment, summaries: Sequence[ArmSummary]) -> pd.DataFrame:
    rows = []
    for s in summaries:
        rec = {"template": s.label, "outputs": s.cells - s.errors, "errors": s.errors,
               "all checks pass": _pct(s.pass_rate)}
        for chk, rate in zip(exp.checks, s.check_rates, strict=True):
            rec[chk.label] = _pct(rate)
        if exp.has_reference:
            rec.update({"exact match": _num(s.exact, "{:.2f}"), "token F1": _num(s.f1), "cosine": _num(s.cosine)})
        rec.update({"latency (s)": _num(s.mean_seconds, "{:.2f}"), "tokens": _num(s.mean_tokens, "{:.1f}"),
                    "voters' win rate [95% CI]": _wr(s.human), "judge win rate [95% CI]": _wr(s.judge)})
        rows.append(rec)
    return pd.DataFrame(rows)


def scores_figure(exp: Experiment, summaries: Sequence[ArmSummary]) -> go.Figure:
    """Grouped bars: pass rate and (with references) exact match, token F1, cosine, per arm."""
    metrics = [("all checks pass", lambda s: s.pass_rate)]
    if exp.has_reference:
        metrics += [("exact match", lambda s: s.exact), ("token F1", lambda s: s.f1), ("cosine", lambda s: s.cosine)]
    fig = go.Figure()
    for i, s in enumerate(summaries):
        ys = [f(s) for _, f in metrics]
        labels = [_num(y, "{:.2f}") for y in ys]
        fig.add_bar(name=s.label, x=[m for m, _ in metrics], y=[0 if y is None else y for y in ys],
                    marker_color=COLOURS[i % 4], hovertext=labels, hoverinfo="name+x+text",
                    # with three or more bars per group the numbers above them overlap: hover shows them
                    text=labels if len(summaries) <= 2 else None, textposition="outside")
    fig.update_layout(barmode="group", height=320, margin=dict(l=10, r=10, t=40, b=10), yaxis=dict(range=[0, 1.15]),
                      title="Checks and reference scores (higher is better)", legend=dict(orientation="h", y=-0.15))
    return fig


def win_rate_figure(summaries: Sequence[ArmSummary]) -> go.Figure:
    """Win rate per arm with its 95% Wilson interval as error bars, for the votes of everyone who voted (one per voter and pair) and the judge."""
    fig = go.Figure()
    for who, attr, colour in (("votes (all voters)", "human", "#6c4cf5"), ("judge", "judge", "#94a3b8")):
        xs, ys, lo, hi, text = [], [], [], [], []
        for s in summaries:
            w = getattr(s, attr)
            if w.rate is None:
                continue
            xs.append(s.label)
            ys.append(w.rate)
            lo.append(w.rate - w.low)
            hi.append(w.high - w.rate)
            text.append(f"n={w.n:g}")
        fig.add_bar(name=who, x=xs, y=ys, marker_color=colour, text=text, textposition="inside",
                    error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo))
    fig.add_hline(y=0.5, line_dash="dot", line_color="#64748b", annotation_text="no preference")
    fig.update_layout(barmode="group", height=320, margin=dict(l=10, r=10, t=40, b=10), yaxis=dict(range=[0, 1]),
                      title="Win rate with 95% confidence interval (ties count half)", legend=dict(orientation="h", y=-0.15))
    return fig


def summary(exp: Experiment) -> None:
    s = core.summarize(exp)
    st.dataframe(summary_frame(exp, s), hide_index=True)
    left, right = st.columns(2)
    if exp.checks or exp.has_reference:
        left.plotly_chart(scores_figure(exp, s), key="ab_scores_chart")
    if any(x.human.rate is not None or x.judge.rate is not None for x in s):
        right.plotly_chart(win_rate_figure(s), key="ab_winrate_chart")
    else:
        right.info("No votes or verdicts yet: vote in the **Vote** tab or run the judge to see win rates.")


def experiments_frame(infos: Sequence[core.ExperimentInfo]) -> pd.DataFrame:
    import datetime as dt

    return pd.DataFrame([{
        "name": i.name, "id": i.id, "changed": dt.datetime.fromtimestamp(i.updated).strftime("%Y-%m-%d %H:%M"),
        "templates": i.variants, "rows": i.rows, "outputs": i.cells, "votes": i.votes, "verdicts": i.verdicts,
        "rerun of": i.parent_id or "",
    } for i in infos])
