"""The sections of the Prompt A/B page, top to bottom, each a function that draws its part and
returns what it produced: the open experiment, the templates, the inputs, the checks, the run
controls, and the results tabs (grid, vote, judge, summary, export).

The page's session keys are named once, in `K`. Widgets a test touches keep their keys.
Every text box states its limit (playground.limits) in its help; the core refuses a longer
value with the numbers, and the text stays in the box, so nothing typed is lost.

What it leaves out: the logic (playground.experiments: parsing, merging edits, picking the next
row to vote on, deciding between a rerun and a fork) and the drawing of single parts (grid,
cell details, diff, summary charts: components/experiments.py).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

import streamlit as st

from components import answer_tokens, cache, special_tokens
from components import experiments as view
from components.models import load as load_model
from components.pickers import default_generator as default_model
from components.pickers import generators
from components.pickers import label as model_label
from playground import experiments as core
from playground.errors import PlaygroundError, describe
from playground.generate import GenerationSettings
from playground.limits import (
    CELL_CHARS, JSON_DEPTH, NAME_CHARS, PASTE_CHARS, REGEX_CHARS, RENDER_CHARS, RENDER_SECONDS, RUBRIC_CHARS,
    SYSTEM_CHARS, TEMPLATE_CHARS, UPLOAD_BYTES, UPLOAD_COLUMNS,
)
from playground.options import bounds
from playground.registry import DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDER
from playground.uploads import mb


class K:
    exp = "ab_exp"  # the open experiment's id (URL: exp)
    loaded = "ab_loaded"  # the experiment whose contents fill the widgets
    name = "ab_name"
    n = "ab_n"
    rows = "ab_rows"  # the input table's base records (they may hold columns no template shows)
    current = "ab_current_rows"  # the table as last edited
    cols = "ab_cols"
    table_ver = "ab_table_ver"
    paste = "ab_paste"
    paste_use = "ab_paste_use"
    upload = "ab_upload"
    upload_ref = "ab_upload_ref"
    upload_for = "ab_upload_for"  # the file the reference column was guessed for
    upload_use = "ab_upload_use"
    input_msg = "ab_input_msg"
    checks = "ab_checks"
    checks_ver = "ab_checks_ver"
    checks_current = "ab_checks_current"  # the checks table as last edited
    models = "ab_models"
    max_tokens = "ab_max_tokens"
    temperature = "ab_temperature"
    chat = "ab_chat"
    gen_extra = "ab_gen_extra"  # generation settings the page has no slider for (kept from a reopened experiment)
    confirm = "ab_confirm"
    run = "ab_run"
    save = "ab_save"
    new = "ab_new"
    open_pick = "ab_open_pick"
    open = "ab_open"
    flash = "ab_flash"
    cell = "ab_cell"
    show_prompt = "ab_show_prompt"
    shade = "ab_shade"  # the uncertainty shading of a cell's tokens
    plain = "ab_plain"  # special tokens typed in templates or inputs go as plain text
    tokens = "ab_tokens"  # (experiment, row, template, model) -> the tokens of the cells this session generated
    diff_left = "ab_diff_left"
    diff_right = "ab_diff_right"
    blind = "ab_blind"
    pair = "ab_pair"
    vote_row = "ab_vote_row"
    voter = "ab_voter"  # this browser session's voter id: its votes replace one another, others' add up
    judge_model = "ab_judge_model"
    judge_tokens = "ab_judge_tokens"
    judge_run = "ab_judge_run"
    rubric = "ab_rubric"
    tab = "ab_tab"

    @staticmethod
    def tpl(part: str, i: int) -> str:
        """A template editor's widget: part "fmt" | "sys" | "tpl", i = 0..3."""
        return f"ab_{part}_{i}"


REF = core.REFERENCE
EXAMPLES = [  # (format, system, template) for templates A-D
    ("f-string", "", "Answer in as few words as possible.\nQuestion: {question}"),
    ("f-string", "You are a patient teacher. Answer in one complete sentence.", "{question}"),
    ("mustache", "", "Q: {{{question}}}\nA:"),
    ("jinja2", "", "{{ question }}\nThink it through, then give the answer on its own line."),
]
EXAMPLE_ROWS = [
    {"question": "What is the capital of France?", REF: "Paris"},
    {"question": "How many legs does a spider have?", REF: "Eight"},
    {"question": "What colour is the sky on a clear day?", REF: "Blue"},
]
EXAMPLE_CHECKS = [core.Check("length", hi=120), core.Check("not contains", "sorry")]
MAX_TOKENS_CAP = 512  # the page's slider stops here; the core allows more


def defaults() -> dict:
    d = {
        K.exp: "", K.loaded: "", K.name: "Short answers vs full sentences", K.n: 2,
        K.rows: [dict(r) for r in EXAMPLE_ROWS], K.current: None, K.cols: None, K.table_ver: 0,
        K.paste: "", K.input_msg: None, K.checks: view.check_records(EXAMPLE_CHECKS), K.checks_ver: 0,
        K.checks_current: None, K.models: [default_model()], K.max_tokens: 24, K.temperature: 0.0, K.chat: True,
        K.gen_extra: {}, K.confirm: False, K.flash: None, K.blind: True, K.judge_model: DEFAULT_CHAT_MODEL,
        K.judge_tokens: 48, K.rubric: core.DEFAULT_RUBRIC, K.show_prompt: False, K.voter: uuid.uuid4().hex[:16],
    }
    for i, (fmt, system, template) in enumerate(EXAMPLES):
        d.update({K.tpl("fmt", i): fmt, K.tpl("sys", i): system, K.tpl("tpl", i): template})
    return d


def store() -> core.ExperimentStore:
    return cache.experiment_store()


# --- editors that outlive a cut-short run ----------------------------------------------------------

def _editor_key(kind: str) -> str:
    return f"ab_{kind}_{st.session_state[K.table_ver if kind == 'table' else K.checks_ver]}"


def restore_editors() -> None:
    """Streamlit drops an editor's edits when a run is cut short before it is drawn (a click while
    the page is still loading) and when another page is shown: an editor whose state was dropped is
    rebuilt from the rows it last showed."""
    ss = st.session_state
    for kind, base, last, ver in (("table", K.rows, K.current, K.table_ver),
                                  ("checks", K.checks, K.checks_current, K.checks_ver)):
        if ver in ss and _editor_key(kind) not in ss and ss.get(last) is not None:
            ss[base] = core.merge_edits(ss[base], ss[last]) if kind == "table" else ss[last]
            ss[last] = None
            ss[ver] += 1


# --- callbacks: they run before the page, so they may set widget values -------------------------

def fill_widgets(exp: core.Experiment) -> None:
    """Put a saved experiment into the page's widgets."""
    ss = st.session_state
    ss[K.n] = len(exp.variants)
    for i, v in enumerate(exp.variants[:4]):
        ss[K.tpl("fmt", i)], ss[K.tpl("sys", i)], ss[K.tpl("tpl", i)] = v.format, v.system, v.template
    ss[K.rows] = [{**{k: str(x) for k, x in r.values.items()}, REF: r.reference or ""} for r in exp.rows]
    ss[K.current], ss[K.cols] = None, None
    ss[K.table_ver] += 1
    ss[K.checks], ss[K.checks_current] = view.check_records(exp.checks), None
    ss[K.checks_ver] += 1
    g = exp.settings.generation
    ss[K.models] = list(exp.settings.model_ids)
    ss[K.max_tokens] = min(g.max_new_tokens, MAX_TOKENS_CAP)
    ss[K.temperature] = float(g.temperature)
    ss[K.chat] = exp.settings.use_chat_template
    ss[K.gen_extra] = core.extra_settings(g)
    ss[K.name], ss[K.rubric] = exp.name, exp.rubric
    ss[K.exp] = ss[K.loaded] = exp.id


def on_open() -> None:
    picked = st.session_state.get(K.open_pick)
    if not picked:
        return
    try:
        fill_widgets(store().load(picked))
        st.session_state[K.flash] = ("success", f"Opened '{st.session_state[K.name]}'.")
    except Exception as exc:  # noqa: BLE001 - shown with describe(), never a traceback
        st.session_state[K.flash] = ("error", describe(exc))


def on_new() -> None:
    ss = st.session_state
    ss[K.exp] = ss[K.loaded] = ""
    ss[K.name] = f"{ss[K.name]} (new)"
    ss[K.flash] = ("info", "A new experiment: the templates and inputs are kept; Run or Save creates it.")


def on_paste(variables: tuple[str, ...]) -> None:
    ss = st.session_state
    try:
        records = core.parse_pasted(ss[K.paste], list(variables))
        core.rows_from_records(records, name="the pasted rows")  # the row and cell limits
    except Exception as exc:  # noqa: BLE001 - shown with describe(), never a traceback
        ss[K.input_msg] = ("error", describe(exc))
        return
    ss[K.rows] = [{**r, REF: r.get(REF, "")} for r in records]
    ss[K.current] = None
    ss[K.table_ver] += 1
    ss[K.input_msg] = ("success", f"{len(records)} pasted row(s) are now the inputs.")


def on_upload(records: list[dict], ref_col: str | None, variables: tuple[str, ...], filename: str) -> None:
    ss = st.session_state
    rows, kind, message = core.upload_rows(records, ref_col, variables, filename, reference=REF)
    ss[K.rows], ss[K.current] = rows, None
    ss[K.table_ver] += 1
    ss[K.input_msg] = (kind, message)


def on_vote(exp_id: str, row: int, a: core.Arm, b: core.Arm, choice: str, blind: bool, rows: list[int],
            x: core.Arm, y: core.Arm) -> None:
    ss = st.session_state
    try:
        exp = store().load(exp_id)
        core.vote(exp, row, a, b, choice, blind, store(), voter=ss[K.voter])
    except Exception as exc:  # noqa: BLE001 - shown with describe(), never a traceback
        ss[K.flash] = ("error", describe(exc))
        return
    later = core.next_row(exp, x, y, rows, after=row, voter=ss[K.voter])
    if later is not None:
        ss[K.vote_row] = later


# --- the sections, top to bottom -----------------------------------------------------------------

def open_store() -> core.ExperimentStore:
    """The experiments database; a page that cannot open it says why and stops."""
    try:
        return store()
    except Exception as exc:  # noqa: BLE001 - shown with describe(), never a traceback
        st.error(describe(exc))
        st.stop()


def open_linked(db: core.ExperimentStore) -> None:
    """A link to an experiment (?exp=id) fills the widgets with it once."""
    ss = st.session_state
    if ss[K.exp] and ss[K.exp] != ss[K.loaded]:
        try:
            fill_widgets(db.load(ss[K.exp]))
        except Exception as exc:  # noqa: BLE001 - shown with describe(), never a traceback
            st.error(describe(exc))
            ss[K.exp] = ss[K.loaded] = ""


LIMITS_TEXT = (
    f"- **Limits**: up to {core.MAX_ROWS:,} rows per experiment; a run of more than {core.CONFIRM_CELLS} "
    "generations asks you to confirm it first. If a model fails halfway, the finished cells are kept: "
    "press Run again to fill in the rest. Uploads: UTF-8 text, " + f"{mb(UPLOAD_BYTES.value)}, "
    f"{UPLOAD_COLUMNS.value} columns, JSON nested {JSON_DEPTH.value} levels at most. A template is "
    f"{TEMPLATE_CHARS.text} (a system message {SYSTEM_CHARS.value:,}), fills in within "
    f"{RENDER_SECONDS.value:g} seconds and gives {RENDER_CHARS.text} per row. A regex check runs on RE2 "
    "(no backreferences or lookaround, so no pattern can stall the app) and is "
    f"{REGEX_CHARS.text}."
)


def intro() -> None:
    st.title("Prompt A/B")
    st.write(
        "Write two to four prompt templates, run each on every input row, and decide with evidence which is better: "
        "outputs side by side, automatic checks, scores against reference answers, a judge model, and your own blind "
        "votes. Every run is saved, so you can come back to it, rerun it after an edit, or send a link."
    )
    with st.expander("How to read this"):
        st.markdown(
            "- **Templates** are LangChain prompt templates: *f-string* `{question}`, *mustache* `{{question}}` "
            "(`{{{question}}}` to skip HTML escaping) or *jinja2* `{{ question }}` (sandboxed: `''.__class__` and "
            "other Python internals are refused). Their **variables** become the columns of the input table.\n"
            "- **The grid** has one row per input and one column per template (per template and model when you pick "
            "two models). A cell shows the output; pick it under *Cell details* for its tokens, latency, checks, "
            "scores and the exact prompt the model received (chat template included). *Diff* compares two cells "
            "word by word.\n"
            "- **Checks** run on every output: contains / does not contain (ignoring case), regex, valid JSON, "
            "length. With a **reference** answer, each output also gets *exact match* and *token F1* (after "
            "lower-casing and removing punctuation and articles) and the *cosine* similarity of MiniLM sentence "
            "embeddings.\n"
            "- **Vote** shows two outputs for a row as A and B. In **blind** mode which template is A is a fixed coin "
            "flip per row, so you judge the text, not the name (vote before looking at the grid). *Both bad* counts "
            "as a tie in win rates.\n"
            "- **Judge**: a model reads your rubric, the row and both outputs and answers 1, 2 or tie, with a reason. "
            "It is asked twice, with the outputs swapped; a template wins only if the judge picks it both times, so "
            "a judge that just prefers the first position gives ties. A 135M model is a weak judge: its verdicts "
            "show the mechanics, not the truth.\n"
            "- **Win rate** = (wins + ties/2) / comparisons, with a **95% Wilson score interval**. With a handful of "
            "rows the interval is wide: an interval that contains 50% means the evidence does not separate the "
            "templates yet.\n"
            + LIMITS_TEXT + "\n"
            "- Try: make template B a jinja2 template, add a `valid JSON` check and ask for JSON in one template "
            "only, or pick a second model."
        )


def flash() -> None:
    """The message a callback or the last Run / Save left, shown once."""
    ss = st.session_state
    if ss[K.flash]:
        kind, text = ss[K.flash]
        getattr(st, kind)(text)
        ss[K.flash] = None


def saved_experiments(db: core.ExperimentStore) -> core.Experiment | None:
    """The picker of saved experiments, Open / New, the name; returns the open experiment."""
    ss = st.session_state
    infos = db.list()
    labels = {i.id: f"{i.name} · {i.cells} outputs · {i.votes} votes · {i.id}" for i in infos}
    if ss.get(K.open_pick) not in labels:
        ss[K.open_pick] = None
    c1, c2, c3 = st.columns([5, 1, 1], vertical_alignment="bottom")
    c1.selectbox("Saved experiments", list(labels), format_func=labels.get, key=K.open_pick,
                 placeholder="Open a saved experiment…" if labels else "No saved experiments yet")
    c2.button("Open", key=K.open, on_click=on_open, disabled=not labels, width="stretch")
    c3.button("New", key=K.new, on_click=on_new, width="stretch", help="Start a new experiment from what is on the page.")

    current: core.Experiment | None = None
    if ss[K.exp]:
        try:
            current = db.load(ss[K.exp])
        except Exception as exc:  # noqa: BLE001 - shown with describe(), never a traceback
            st.error(describe(exc))
            ss[K.exp] = ""
    st.text_input("Experiment name", key=K.name, help=f"{NAME_CHARS.text}")
    if len(ss[K.name]) > NAME_CHARS.value:
        st.error(f"The name is {len(ss[K.name]):,} characters; {NAME_CHARS.text} are allowed. Shorten it.")
    if current is not None:
        parent = f" · a rerun of `{current.parent_id}`" if current.parent_id else ""
        st.caption(f"Open: `{current.id}`, {len([c for c in current.cells.values() if c.ok])} outputs saved{parent}.")
    else:
        st.caption("Not saved yet: **Run** or **Save** creates the experiment in the database.")
    return current


@dataclass
class Templates:
    """What the template editors hold: every variant, the errors of the invalid ones by name, the valid ones."""

    variants: list
    errors: dict
    valid: list


def templates() -> Templates:
    st.subheader("1 · Templates")
    st.radio("Templates", [2, 3, 4], key=K.n, horizontal=True, format_func=lambda n: f"{n} templates",
             label_visibility="collapsed")
    variants, errors = view.template_editors(st.session_state[K.n], K.tpl)
    return Templates(variants, errors, [v for v in variants if v.name not in errors])


@dataclass
class Inputs:
    """The input table's columns, the templates' variables, the table as edited, and its rows."""

    columns: list
    variables: tuple
    table: list
    rows: tuple


def inputs(t: Templates, current: core.Experiment | None) -> Inputs:
    ss = st.session_state
    st.subheader("2 · Inputs")
    columns = core.table_columns(t.valid, ss[K.cols], bool(t.errors))
    if ss[K.cols] != columns:
        if ss[K.cols] is not None and ss[K.current] is not None:  # keep edits and hidden columns
            ss[K.rows] = core.merge_edits(ss[K.rows], ss[K.current])
        ss[K.cols] = columns
        ss[K.table_ver] += 1
    variables = tuple(c for c in columns if c != REF)

    t_table, t_paste, t_upload = st.tabs(["Table", "Paste", "Upload CSV / JSONL"])
    with t_table:
        table = _table(columns)
    with t_paste:
        _paste(variables)
    with t_upload:
        _upload(variables)
    if ss[K.input_msg]:
        kind, text = ss[K.input_msg]
        getattr(st, kind)(text)

    rows: tuple[core.InputRow, ...] = ()
    try:
        rows = core.rows_from_records([{c: r.get(c, "") for c in columns} for r in table], reference_column=REF)
    except Exception as exc:  # noqa: BLE001 - shown with describe(), never a traceback
        st.error(describe(exc))
    empty = core.empty_values(rows)
    if empty:
        st.warning(f"Empty variables in {empty}: those templates get an empty value there.")
    if rows and t.valid:
        with st.expander("Preview: what each template sends for row 1", expanded=current is None):
            view.preview(t.valid, dict(rows[0].values))
    return Inputs(columns, variables, table, rows)


def _table(columns: list[str]) -> list[dict]:
    ss = st.session_state
    cell_help = f"each value is {CELL_CHARS.text}"
    config = {c: st.column_config.TextColumn(c, help=cell_help) for c in columns if c != REF}
    config[REF] = st.column_config.TextColumn(
        "reference (optional)", help=f"the expected answer: enables exact match, F1 and cosine; {cell_help}")
    edited = st.data_editor(view.frame(ss[K.rows], columns), key=f"ab_table_{ss[K.table_ver]}", num_rows="dynamic",
                            hide_index=True, column_config=config)
    table = view.records_of(edited)
    ss[K.current] = table
    return table


def _paste(variables: tuple[str, ...]) -> None:
    st.text_area("Paste rows", key=K.paste, height=120, help=f"{PASTE_CHARS.text}, {core.MAX_ROWS:,} rows",
                 placeholder="one input per line, or a table whose first line names the columns:\n"
                             + "\t".join([*variables, REF]))
    st.button("Use the pasted rows", key=K.paste_use, on_click=on_paste, args=(variables,))


def _upload(variables: tuple[str, ...]) -> None:
    ss = st.session_state
    up = st.file_uploader(f"CSV, TSV, JSONL or JSON (UTF-8, at most {mb(UPLOAD_BYTES.value)}, {core.MAX_ROWS:,} rows)",
                          type=list(core.UPLOAD_TYPES), key=K.upload)
    if up is None:
        return
    try:
        records = core.parse_upload(up.name, up.getvalue())
        core.rows_from_records(records, name=up.name)  # the row and cell limits
    except Exception as exc:  # noqa: BLE001 - shown with describe(), never a traceback
        st.error(describe(exc))
        return
    file_cols = core.record_columns(records)
    options = [None, *file_cols]
    if ss.get(K.upload_for) != up.file_id or ss.get(K.upload_ref) not in options:  # a new file: guess again
        ss[K.upload_ref], ss[K.upload_for] = core.guess_reference(file_cols), up.file_id
    st.selectbox("Reference column", options, key=K.upload_ref, format_func=lambda c: "(none)" if c is None else c)
    st.caption(f"{len(records):,} rows; columns: {', '.join(file_cols)}.")
    st.button(f"Use {up.name}", key=K.upload_use, on_click=on_upload,
              args=(records, ss[K.upload_ref], variables, up.name))


def checks() -> tuple[list[core.Check], list[str]]:
    """The checks editor: (valid checks, the problem of each invalid row)."""
    ss = st.session_state
    st.subheader("3 · Checks")
    st.caption("Run on every output. Add a row for each check; a row without a kind is ignored. "
               f"A regex runs on RE2 (no backreferences or lookaround) and is {REGEX_CHARS.text}.")
    checks_df = st.data_editor(view.checks_frame(ss[K.checks]), key=f"ab_checks_{ss[K.checks_ver]}",
                               num_rows="dynamic", hide_index=True, column_config=view.CHECK_COLUMNS, placeholder="")
    found, problems = view.checks_of(checks_df)
    ss[K.checks_current] = view.records_of(checks_df)
    for p in problems:
        st.warning(p)
    return found, problems


@dataclass
class RunControls:
    settings: core.RunSettings
    run: bool
    save: bool
    live: object  # the placeholder a run draws its progress in
    plain: bool = False  # special tokens typed in templates or inputs go as plain text


def run_controls(t: Templates, rows: tuple) -> RunControls:
    ss = st.session_state
    st.subheader("4 · Run")
    options = generators()
    for m in ss[K.models]:
        if m not in options:
            options.append(m)
    a, b, c, d = st.columns([3, 2, 2, 1.3], vertical_alignment="bottom")
    a.multiselect("Model (one, or two to compare)", options, key=K.models, max_selections=core.MAX_MODELS,
                  format_func=model_label)
    mt = bounds(GenerationSettings, "max_new_tokens")
    b.slider("Max new tokens", int(mt.lo), MAX_TOKENS_CAP, key=K.max_tokens, help=mt.help)
    tb = bounds(GenerationSettings, "temperature")
    c.slider("Temperature", tb.lo, tb.hi, step=tb.step, key=K.temperature, help=tb.help)
    d.checkbox("Chat template", key=K.chat, help="wrap each prompt in the model's chat template (with the system message)")

    settings = core.page_settings(ss[K.models], ss[K.max_tokens], ss[K.temperature], ss[K.chat], ss[K.gen_extra])
    plain = special_tokens.check(_typed(t, rows), lambda: special_tokens.tokenizers(ss[K.models]), K.plain)
    n_cells = len(rows) * len(t.variants) * max(len(ss[K.models]), 1)
    if n_cells > core.CONFIRM_CELLS:
        st.checkbox(f"Yes, run all {n_cells:,} generations ({len(rows):,} rows x {len(t.variants)} templates x "
                    f"{len(ss[K.models])} model(s))", key=K.confirm)
    r1, r2, _ = st.columns([1, 1, 4])
    run = r1.button("Run", key=K.run, type="primary", width="stretch",
                    help="Generate every missing cell. After editing templates or inputs, a rerun is saved as a new "
                         "experiment.")
    save = r2.button("Save", key=K.save, width="stretch", help="Save templates, inputs, checks and name without running.")
    return RunControls(settings, run, save, st.empty(), plain)


def _typed(t: Templates, rows: tuple) -> dict[str, str]:
    """Every text a person typed that goes into the prompts: the templates, their system messages, the inputs."""
    texts = {}
    for v in t.variants:
        texts[v.label] = v.template
        texts[f"{v.label}, system"] = v.system
    for n, r in enumerate(rows, start=1):
        for col, value in r.values.items():
            texts[f"row {n}, {col}"] = str(value)
    return texts


def _prepared(db, current, t: Templates, i: Inputs, found: list, problems: list, settings) -> tuple:
    if t.errors:
        raise PlaygroundError("Fix the template error(s) first: " + " ".join(t.errors.values()))
    if problems:
        raise PlaygroundError("Fix the check(s) first: " + " ".join(problems))
    ss = st.session_state
    return core.prepare(db, current, name=ss[K.name], variants=t.variants, rows=i.rows, settings=settings,
                        checks=found, rubric=ss[K.rubric])


def save_or_run(db, current, t: Templates, i: Inputs, found: list, problems: list, rc: RunControls) -> None:
    """Handle a click on Save or Run: save (forking a rerun if needed), generate with progress, report."""
    ss = st.session_state
    if rc.save:
        try:
            exp, action, reused = _prepared(db, current, t, i, found, problems, rc.settings)
            ss[K.exp] = ss[K.loaded] = exp.id
            ss[K.flash] = ("success", core.save_message(exp, action, reused))
            st.rerun()
        except Exception as exc:  # noqa: BLE001 - shown with describe(), never a traceback
            rc.live.error(describe(exc))
    if rc.run:
        try:
            exp, action, reused = _prepared(db, current, t, i, found, problems, rc.settings)
            ss[K.exp] = ss[K.loaded] = exp.id
            report = _run(db, exp, rc.live, rc.plain)
            ss[K.flash] = ("success", core.run_message(exp, action, reused, report))
        except Exception as exc:  # noqa: BLE001 - shown, never a traceback
            ss[K.flash] = ("error", describe(exc))
        st.rerun()


KEPT_CELLS = 512  # cells whose tokens a session keeps


def _keep_tokens(exp_id: str, cell: core.Cell) -> None:
    """Keep, for this session, a generated cell's tokens and their probabilities (the store saves only its text)."""
    if not cell.logprobs:
        return
    kept = st.session_state.setdefault(K.tokens, {})
    kept[(exp_id, cell.row, cell.variant, cell.model_id)] = (cell.output, cell.logprobs, cell.token_ids, cell.origin)
    while len(kept) > KEPT_CELLS:
        kept.pop(next(iter(kept)))


def _with_tokens(exp_id: str, cell: core.Cell | None) -> core.Cell | None:
    """The cell with the tokens this session kept for it, if it generated this very output."""
    if cell is None or cell.logprobs:
        return cell
    kept = st.session_state.get(K.tokens, {}).get((exp_id, cell.row, cell.variant, cell.model_id))
    if kept is None or kept[0] != cell.output:
        return cell
    return dataclasses.replace(cell, logprobs=kept[1], token_ids=kept[2], origin=kept[3])


def _run(db, exp: core.Experiment, live, plain: bool = False) -> core.RunReport:
    ss = st.session_state
    pending = len(exp.pending())
    with live.container():
        bar = st.progress(0.0, text=f"0 of {pending} cells")
        now = st.empty()
        grid_slot = st.empty()
    embedder = None
    if exp.has_reference:
        try:
            embedder = cache.embedder(DEFAULT_EMBEDDER)
        except Exception as exc:  # noqa: BLE001 - shown with describe(), never a traceback
            now.warning(f"No embedding similarity this time: {describe(exc)}")

    def on_cell(cell: core.Cell, done: int, total: int) -> None:
        _keep_tokens(exp.id, cell)
        bar.progress(done / total, text=f"{done} of {total} cells · row {cell.row + 1} · "
                                        f"{exp.arm_label(cell.arm)} · {cell.seconds:.1f} s")
        with grid_slot:
            view.grid(exp)

    def on_text(row: int, arm: core.Arm, text: str) -> None:
        now.caption(f"Row {row + 1} · {exp.arm_label(arm)}: {text}▌")

    with grid_slot:
        view.grid(exp)
    return core.run(exp, db, lambda m: load_model(m), embedder=embedder, on_cell=on_cell, on_text=on_text,
                    confirmed=ss[K.confirm], plain=plain)


# --- 5. results ----------------------------------------------------------------------------------

def results(db, current: core.Experiment | None, t: Templates, i: Inputs, settings) -> None:
    st.subheader("5 · Results")
    if current is None or not current.cells:
        st.info("Press **Run** to fill the grid: every template on every input row.")
        return
    exp = current
    if core.differs(exp, t.variants, i.rows, settings):
        st.caption("The templates, inputs or settings above differ from this run's: **Run** saves a rerun as a new "
                   "experiment and reuses the outputs that did not change.")
    g_tab, v_tab, j_tab, s_tab, e_tab = st.tabs(["Grid", "Vote", "Judge", "Summary", "Saved & export"], key=K.tab,
                                                on_change="rerun")  # keyed: the open tab survives a vote's rerun
    with g_tab:
        grid_tab(exp)
    with v_tab:
        vote_tab(exp)
    with j_tab:
        judge_tab(db, exp)
    with s_tab:
        view.summary(exp)
        st.caption("Win rate = (wins + ties/2) / comparisons, over every pairwise vote (or verdict) the template took "
                   "part in; *both bad* counts as a tie. The bracket is the 95% Wilson score interval.")
    with e_tab:
        export_tab(db, exp)


def grid_tab(exp: core.Experiment) -> None:
    ss = st.session_state
    view.grid(exp, key="ab_grid")
    cells = view.cell_options(exp)
    for key, default in ((K.cell, cells[0]), (K.diff_left, cells[0]), (K.diff_right, cells[min(1, len(cells) - 1)])):
        if ss.get(key) not in cells:
            ss[key] = default
    st.markdown("**Cell details**")
    st.selectbox("Cell", cells, key=K.cell, format_func=lambda o: view.cell_label(exp, o))
    row, arm = view.parse_cell_option(exp, ss[K.cell])
    cell = _with_tokens(exp.id, exp.cell(row, arm))
    shade = answer_tokens.shading_control(K.shade) if cell is not None and cell.logprobs else "off"
    view.cell_details(exp, cell, K.show_prompt, shade)
    st.markdown("**Diff between two cells**")
    left, right = st.columns(2)
    left.selectbox("First cell", cells, key=K.diff_left, format_func=lambda o: view.cell_label(exp, o))
    right.selectbox("Second cell", cells, key=K.diff_right, format_func=lambda o: view.cell_label(exp, o))
    view.diff_view(exp.cell(*view.parse_cell_option(exp, ss[K.diff_left])),
                   exp.cell(*view.parse_cell_option(exp, ss[K.diff_right])))


def vote_tab(exp: core.Experiment) -> None:
    ss = st.session_state
    pairs = exp.pairs()
    pair_ids = list(range(len(pairs)))
    if ss.get(K.pair) not in pair_ids:
        ss[K.pair] = 0
    if len(pairs) > 1:
        st.selectbox("Compare", pair_ids, key=K.pair,
                     format_func=lambda i: f"{exp.arm_label(pairs[i][0])} vs {exp.arm_label(pairs[i][1])}")
    x, y = pairs[ss[K.pair]]
    st.toggle("Blind: hide which template is which", key=K.blind)
    votable = core.votable_rows(exp, x, y)
    if not votable:
        st.info("No row has outputs from both templates yet.")
        return
    if ss.get(K.vote_row) not in votable:
        first = core.next_row(exp, x, y, votable, voter=ss[K.voter])
        ss[K.vote_row] = votable[0] if first is None else first
    me = ss[K.voter]  # read here: the row picker's format_func below may run outside the script
    voted = sum(core.vote_for(exp, i, x, y) is not None for i in votable)
    yours = sum(core.vote_for(exp, i, x, y, me) is not None for i in votable)
    st.progress(voted / len(votable),
                text=f"Voted on {voted} of {len(votable)} rows for this pair ({yours} by you; every person's vote counts)")
    st.selectbox("Row", votable, key=K.vote_row, format_func=lambda i: f"Row {i + 1}: "
                 f"{view.short(' · '.join(str(v) for v in exp.rows[i].values.values()), 70)}"
                 f"{'  ✓ voted' if core.vote_for(exp, i, x, y, me) else ''}")
    row = ss[K.vote_row]
    blind = ss[K.blind]
    shown_a, shown_b = core.shown_pair(exp, row, x, y, blind)
    view.inputs(exp.rows[row])
    ca, cb = st.columns(2)
    with ca:
        view.output_box("A" if blind else f"A · template {exp.arm_label(shown_a)}", exp.cell(row, shown_a).output,
                        "#6c4cf5")
    with cb:
        view.output_box("B" if blind else f"B · template {exp.arm_label(shown_b)}", exp.cell(row, shown_b).output,
                        "#94a3b8")
    buttons = st.columns(4)
    for col, choice in zip(buttons, core.VOTE_CHOICES, strict=True):
        col.button(view.CHOICE_LABELS[choice], key=f"ab_vote_{choice.replace(' ', '_')}", width="stretch",
                   on_click=on_vote, args=(exp.id, row, shown_a, shown_b, choice, blind, votable, x, y))
    mine = core.vote_for(exp, row, x, y, me)
    if mine is not None:
        if mine.winner is None:
            said = mine.choice
        else:
            letter = "A" if mine.winner == shown_a else "B"
            said = f"{letter} is better" if blind else f"{exp.arm_label(mine.winner)} is better"
        st.caption(f"Your vote on this row: **{said}**. Vote again to change it.")


def judge_tab(db, exp: core.Experiment) -> None:
    ss = st.session_state
    st.caption("The judge is asked twice per row and pair, with the outputs swapped; a template wins only when "
               "both answers pick it. Its reasons are kept beside each verdict.")
    j1, j2 = st.columns([3, 2])
    judge_options = generators()
    if ss[K.judge_model] not in judge_options:
        judge_options.append(ss[K.judge_model])
    j1.selectbox("Judge model", judge_options, key=K.judge_model, format_func=model_label)
    j2.slider("Judge's max new tokens", 4, 256, key=K.judge_tokens)
    st.text_area("Rubric", key=K.rubric, height=90, help=f"what makes one response better than another; "
                                                          f"{RUBRIC_CHARS.text}")
    n_pairs = len(exp.pairs())
    if st.button(f"Run the judge ({2 * n_pairs * len(exp.rows)} generations at most)", key=K.judge_run):
        try:
            RUBRIC_CHARS.check(len(ss[K.rubric]), "The rubric")
            exp.rubric = ss[K.rubric]
            db.save(exp)
            judge_lm = load_model(ss[K.judge_model])
            bar = st.progress(0.0, text="Judging…")
            core.run_judge(exp, core.model_judge(judge_lm, GenerationSettings(max_new_tokens=ss[K.judge_tokens])),
                           ss[K.judge_model], db,
                           on_verdict=lambda v, i, n: bar.progress(i / n, text=f"{i} of {n} verdicts"))
            st.success(f"{len(exp.verdicts)} verdict(s) saved.")
        except Exception as exc:  # noqa: BLE001 - shown with describe(), never a traceback
            st.error(describe(exc))
    view.verdicts_table(exp)


def export_tab(db, exp: core.Experiment) -> None:
    base = st.context.url or "/prompt_ab"
    link = f"{base.split('?')[0]}?exp={exp.id}"
    st.markdown(f"[Link to this experiment]({link}) — anyone with access to this app can open it.")
    st.code(link, language=None)
    d1, d2, _ = st.columns([1, 1, 3])
    d1.download_button("Export CSV", core.to_csv(exp), file_name=f"prompt-ab-{exp.id}.csv", mime="text/csv",
                       key="ab_export_csv", on_click="ignore")
    d2.download_button("Export JSON", core.to_json(exp), file_name=f"prompt-ab-{exp.id}.json",
                       mime="application/json", key="ab_export_json", on_click="ignore")
    st.markdown("**Saved experiments**")
    st.dataframe(view.experiments_frame(db.list()), hide_index=True)
