"""A/B experiments: checks, reference scores, win rate and its interval, the judge's swap logic,
votes with blind mode, a real run on SmolLM2 saved and reopened, a model failing halfway,
inputs (CSV, JSONL, pasted, too many rows), and the page (AppTest and Chromium)."""

from __future__ import annotations

import json

import pytest

from playground import experiments as ex
from playground.errors import InputError, PlaygroundError, TemplateError
from playground.experiments import (
    Arm, Check, Experiment, ExperimentStore, InputRow, RawVerdict, RunSettings, combine, win_rate,
)
from playground.generate import GenerationSettings, generate
from playground.prompts import PromptVariant

SMOL = "smollm2-135m-instruct"
TINY = RunSettings((SMOL,), GenerationSettings(max_new_tokens=12))

VARIANTS = (
    PromptVariant("A", "Answer in one word: {question}"),
    PromptVariant("B", "{{question}} Reply with a short sentence.", system="You are a {{tone}} assistant.",
                  format="mustache"),
)
ROWS = (
    InputRow({"question": "What is the capital of France?", "tone": "terse"}, "Paris"),
    InputRow({"question": "What colour is the sky on a clear day?", "tone": "friendly"}, "blue"),
    InputRow({"question": "How many legs does a spider have?", "tone": "terse"}, "eight"),
)


# --- checks and reference scores ------------------------------------------------------------

@pytest.mark.parametrize("check, output, expected", [
    (Check("contains", "paris"), "The capital is Paris.", True),
    (Check("contains", "london"), "The capital is Paris.", False),
    (Check("not contains", "as an ai"), "As an AI, I cannot", False),
    (Check("not contains", "as an ai"), "Paris.", True),
    (Check("regex", r"^\d+$"), "42", True),
    (Check("regex", r"^\d+$"), "42 legs", False),
    (Check("valid JSON"), '{"colour": "blue"}', True),
    (Check("valid JSON"), '```json\n{"colour": "blue"}\n```', True),
    (Check("valid JSON"), "{'colour': 'blue'}", False),
    (Check("valid JSON"), "", False),
    (Check("length", lo=3, hi=10), "Paris", True),
    (Check("length", lo=3, hi=4), "Paris", False),
    (Check("length", hi=3, unit="words"), "one two three", True),
    (Check("length", hi=2, unit="words"), "one two three", False),
    (Check("length", lo=1, unit="words"), "   ", False),
])
def test_each_check_type(check, output, expected):
    assert check.validate()(output) is expected


@pytest.mark.parametrize("check, fragment", [
    (Check("regex", "(unclosed"), "does not compile"),
    (Check("contains", ""), "needs a value"),
    (Check("length"), "needs a minimum, a maximum"),
    (Check("length", lo=10, hi=2), "minimum (10) is above its maximum (2)"),
    (Check("sounds good"), "not one of"),
])
def test_bad_checks_are_named(check, fragment):
    with pytest.raises(InputError) as err:
        check.validate()
    assert fragment in str(err.value)


def test_exact_match_and_token_f1_by_hand():
    assert ex.exact_match("The Paris.", "paris") == 1.0  # case, punctuation and articles do not count
    assert ex.exact_match("Paris, France", "Paris") == 0.0
    # pred "the cat sat on mat" -> [cat, sat, on, mat]; ref "a cat on the mat" -> [cat, on, mat]
    # common 3: precision 3/4, recall 3/3, F1 = 2 * .75 * 1 / 1.75 = 6/7
    assert ex.token_f1("the cat sat on mat", "a cat on the mat") == pytest.approx(6 / 7)
    assert ex.token_f1("dog", "cat") == 0.0
    assert ex.token_f1("", "") == 1.0


def test_embedding_similarity_with_minilm(embedder):
    same = ex.embedding_similarity(embedder, "The capital of France is Paris.", "The capital of France is Paris.")
    close = ex.embedding_similarity(embedder, "Paris is France's capital city.", "The capital of France is Paris.")
    far = ex.embedding_similarity(embedder, "Spiders have eight legs.", "The capital of France is Paris.")
    assert same == pytest.approx(1.0, abs=1e-5)
    assert close > 0.7 > far


# --- win rate and its interval -------------------------------------------------------------------

def test_win_rate_and_wilson_interval_by_hand():
    # 7 wins, 2 losses, 1 tie: p = (7 + 0.5) / 10 = 0.75, n = 10, z = 1.959964, z^2 = 3.841459
    # denominator 1 + z^2/n = 1.3841459; centre (0.75 + 0.1920729) / 1.3841459 = 0.6806168
    # half = z / 1.3841459 * sqrt(0.75 * 0.25 / 10 + 3.841459 / 400) = 1.4160097 * 0.1683854 = 0.2384354
    w = win_rate(7, 2, 1)
    assert w.rate == 0.75 and w.n == 10
    assert w.low == pytest.approx(0.6806168 - 0.2384354, abs=1e-6)  # 0.4421814
    assert w.high == pytest.approx(0.6806168 + 0.2384354, abs=1e-6)  # 0.9190522
    # 3 wins, 3 losses, 4 ties: p = 0.5, centre 0.5, half = 1.416009 * sqrt(0.025 + 0.0096036) = 0.263407
    w = win_rate(3, 3, 4)
    assert (w.rate, round(w.low, 4), round(w.high, 4)) == (0.5, 0.2366, 0.7634)
    # 5 of 5: the textbook Wilson interval [0.5655, 1]
    w = win_rate(5, 0, 0)
    assert w.rate == 1.0 and round(w.low, 4) == 0.5655 and w.high == 1.0
    assert win_rate(0, 0, 0).rate is None


@pytest.mark.parametrize("wins, losses", [(7, 3), (1, 9), (12, 5), (0, 4)])
def test_wilson_without_ties_agrees_with_scipy(wins, losses):
    from scipy.stats import binomtest

    ci = binomtest(wins, wins + losses).proportion_ci(confidence_level=0.95, method="wilson")
    w = win_rate(wins, losses, 0)
    assert w.low == pytest.approx(ci.low, abs=1e-9) and w.high == pytest.approx(ci.high, abs=1e-9)


# --- the judge's swap logic, with a scripted judge ------------------------------------------------

def _filled(variants=VARIANTS, rows=ROWS, outputs=None) -> Experiment:
    """An experiment whose cells hold given outputs (for the logic that does not need a model)."""
    exp = Experiment("scripted", tuple(variants), tuple(rows), TINY)
    for i in range(len(rows)):
        for v in variants:
            text = (outputs or {}).get((i, v.name), f"{v.name} says {i}")
            exp.cells[(i, v.name, SMOL)] = ex.Cell(i, v.name, SMOL, output=text)
    return exp


class ScriptedJudge:
    """A judge that answers from a script and records what it was shown."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen = []

    def __call__(self, task, response_1, response_2, rubric):
        self.seen.append((task, response_1, response_2, rubric))
        return RawVerdict(self.answers.pop(0), f"reason {len(self.seen)}")


def test_combine_cancels_position_bias():
    assert combine("1", "2") == "x"  # x shown first, then second: preferred both times
    assert combine("2", "1") == "y"
    assert combine("1", "1") == "tie"  # always the first position: position bias, not content
    assert combine("2", "2") == "tie"
    assert combine("tie", "tie") == "tie"
    assert combine("1", "tie") == "tie"


def test_judge_is_asked_in_both_orders_and_verdicts_combine():
    exp = _filled()
    a, b = exp.arms
    # per row, two answers: (x=A shown first), (y=B shown first)
    judge = ScriptedJudge(["1", "2",   # row 1: A both times -> A wins
                           "1", "1",   # row 2: first position both times -> tie, inconsistent
                           "2", "1"])  # row 3: B both times -> B wins
    verdicts = ex.run_judge(exp, judge, "scripted")
    assert [v.winner for v in verdicts] == [a, None, b]
    assert [v.consistent for v in verdicts] == [True, False, True]
    assert [s[1:3] for s in judge.seen[:2]] == [("A says 0", "B says 0"), ("B says 0", "A says 0")]
    assert "question: What is the capital of France?" in judge.seen[0][0]
    assert "reference answer: Paris" in judge.seen[0][0]
    assert all(s[3] == ex.DEFAULT_RUBRIC for s in judge.seen)
    assert verdicts[0].first.reason == "reason 1" and verdicts[0].second.reason == "reason 2"
    s = {x.arm: x for x in ex.summarize(exp)}
    assert (s[a].judge.wins, s[a].judge.losses, s[a].judge.ties) == (1, 1, 1)
    assert s[a].judge.rate == 0.5


def test_parse_verdict():
    assert ex.parse_verdict("2\nIt is shorter.") == RawVerdict("2", "It is shorter.", "2\nIt is shorter.")
    assert ex.parse_verdict("Tie. Both are fine").choice == "tie"
    assert ex.parse_verdict("I think Response 1 is better.").choice == "1"
    assert ex.parse_verdict("no idea").choice == "tie"


# --- votes and blind mode -------------------------------------------------------------------------

def test_blind_assignment_is_stable_per_row_and_mixed():
    x, y = Arm("A", SMOL), Arm("B", SMOL)
    flips = [ex.blind_swap("exp1", row, x, y) for row in range(200)]
    assert flips == [ex.blind_swap("exp1", row, x, y) for row in range(200)]  # the same every time
    assert 70 < sum(flips) < 130  # about half the rows show B as "A"
    assert flips != [ex.blind_swap("exp2", row, x, y) for row in range(200)]


def test_votes_map_shown_letters_back_to_variants():
    exp = _filled()
    x, y = exp.arms
    for row in range(3):
        a, b = ex.shown_pair(exp, row, x, y, blind=True)
        assert {a, b} == {x, y}
        assert (a == y) == ex.blind_swap(exp.id, row, x, y)
        ex.vote(exp, row, a, b, "A", blind=True)  # the person prefers whatever was shown as A
    assert [ex.vote_for(exp, r, x, y).winner for r in range(3)] == [ex.shown_pair(exp, r, x, y, True)[0] for r in range(3)]
    assert ex.shown_pair(exp, 0, y, x, blind=False) == (x, y)  # not blind: the pair's own order
    ex.vote(exp, 0, x, y, "both bad", blind=False)  # a new vote on the row replaces the old one
    assert len(exp.votes) == 3 and ex.vote_for(exp, 0, x, y).winner is None
    with pytest.raises(InputError, match="A vote is one of"):
        ex.vote(exp, 1, x, y, "C", blind=False)


# --- inputs --------------------------------------------------------------------------------------

def test_csv_with_bad_encoding_gets_a_clear_message():
    data = "question,reference\nCafé au lait?,oui\n".encode("cp1252")
    with pytest.raises(InputError) as err:
        ex.parse_upload("drinks.csv", data)
    msg = str(err.value)
    assert "drinks.csv is not UTF-8" in msg and "0xe9 at position 22 (line 2, column 4)" in msg and "CSV UTF-8" in msg


def test_csv_tsv_jsonl_and_reference_column():
    recs = ex.parse_upload("q.csv", '\ufeffquestion,reference\n"Paris, or Rome?",Paris\n\n2+2?,4\n'.encode())
    rows = ex.rows_from_records(recs, reference_column="reference")
    assert rows == (InputRow({"question": "Paris, or Rome?"}, "Paris"), InputRow({"question": "2+2?"}, "4"))
    assert ex.parse_upload("q.tsv", b"question\tcontext\nwhy\tbecause\n") == [{"question": "why", "context": "because"}]
    assert ex.parse_upload("q.jsonl", b'{"question": "a"}\n\n{"question": "b", "n": 2}\n')[1] == {"question": "b", "n": 2}
    with pytest.raises(InputError, match=r"q.jsonl, line 2 is not valid JSON"):
        ex.parse_upload("q.jsonl", b'{"question": "a"}\n{"question": \n')
    with pytest.raises(InputError, match=r"line 3: 3 fields, but the header has 2"):
        ex.parse_upload("q.csv", b"question,reference\na,b\nc,d,e\n")
    with pytest.raises(InputError, match="no column 'answer'"):
        ex.rows_from_records(recs, reference_column="answer")
    with pytest.raises(InputError, match="upload a .csv"):
        ex.parse_upload("q.xlsx", b"PK")


def test_pasted_text():
    assert ex.parse_pasted("why?\n\nhow?\n", ["question"]) == [{"question": "why?"}, {"question": "how?"}]
    assert ex.parse_pasted("question\treference\nwhy?\tbecause\n", ["question"]) == [
        {"question": "why?", "reference": "because"}]
    with pytest.raises(InputError, match="paste a table whose first line names the columns"):
        ex.parse_pasted("why?\nhow?", ["question", "context"])


def test_thousands_of_rows_are_refused_and_big_runs_need_confirmation():
    with pytest.raises(InputError, match="has 2,500 rows; an experiment holds at most 1,000"):
        ex.rows_from_records([{"question": f"q{i}"} for i in range(2500)])
    assert ex.check_size(30, 2) == 60
    with pytest.raises(InputError, match=r"makes 400 generations \(200 rows x 2 columns\)"):
        ex.check_size(200, 2)
    assert ex.check_size(200, 2, confirmed=True) == 400
    big = Experiment("big", VARIANTS, tuple(ROWS[0] for _ in range(40)), TINY)
    with pytest.raises(InputError, match="makes 80 generations"):
        ex.run(big, None, lambda m: pytest.fail("nothing may load before the size is confirmed"))


def test_missing_and_unknown_variables_stop_a_run_before_it_starts():
    rows = (InputRow({"question": "q"}),)  # B needs 'tone' too
    with pytest.raises(TemplateError, match="Template B uses 'tone', which the inputs have no column for"):
        Experiment("x", VARIANTS, rows, TINY).validate()
    rows = (InputRow({"question": "q", "tone": "t", "colour": "red"}),)
    with pytest.raises(TemplateError, match="'colour' are used by no template"):
        Experiment("x", VARIANTS, rows, TINY).validate()


# --- a real run on SmolLM2 -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_run(smollm2, embedder, tmp_path_factory):
    """2 templates x 3 rows on SmolLM2, greedy, 12 new tokens, scored against references."""
    path = tmp_path_factory.mktemp("db") / "experiments.sqlite3"
    store = ExperimentStore(path)
    exp = Experiment("capitals", VARIANTS, ROWS, TINY,
                     checks=(Check("length", hi=200), Check("not contains", "as an ai")))
    seen = []
    report = ex.run(exp, store, lambda m: smollm2, embedder=embedder,
                    on_cell=lambda cell, done, total: seen.append((cell.row, cell.variant, done, total)))
    return store, exp, report, seen, path


def test_real_run_fills_every_cell_and_saves_it(real_run, smollm2):
    store, exp, report, seen, path = real_run
    assert (report.generated, report.failed, report.skipped) == (6, 0, 0)
    assert [(r, v) for r, v, _, _ in seen] == [(0, "A"), (0, "B"), (1, "A"), (1, "B"), (2, "A"), (2, "B")]
    assert [d for *_, d, t in seen] == [1, 2, 3, 4, 5, 6] and seen[-1][3] == 6
    for cell in exp.cells.values():
        assert cell.ok and cell.output.strip() and 1 <= cell.new_tokens <= 12 and cell.seconds > 0
        assert cell.prompt.startswith("<|im_start|>") and cell.user in cell.prompt
        assert len(cell.checks) == 2 and cell.f1 is not None and cell.cosine is not None
    b0 = exp.cells[(0, "B", SMOL)]
    assert b0.system == "You are a terse assistant." and "You are a terse assistant." in b0.prompt
    # the run loop's output is exactly the bare generation call's (greedy)
    bare = generate(smollm2, ROWS[1].values["question"] + " Reply with a short sentence.", TINY.generation,
                    system="You are a friendly assistant.")
    assert exp.cells[(1, "B", SMOL)].output == bare.text


def test_after_a_restart_everything_is_there(real_run):
    store, exp, report, seen, path = real_run
    x, y = exp.arms
    for row in range(3):
        a, b = ex.shown_pair(exp, row, x, y, blind=True)
        ex.vote(exp, row, a, b, ["A", "B", "tie"][row], blind=True, store=store)
    ex.run_judge(exp, ScriptedJudge(["1", "2", "1", "1", "2", "1"]), "scripted", store=store)
    before = ex.summarize(exp)

    reopened = ExperimentStore(path).load(exp.id)  # a new store object, new connections: as after a restart
    assert reopened.name == "capitals" and reopened.variants == VARIANTS and reopened.rows == ROWS
    assert reopened.settings == TINY and reopened.checks == exp.checks and reopened.rubric == exp.rubric
    assert set(reopened.cells) == set(exp.cells)
    for key, cell in exp.cells.items():
        again = reopened.cells[key]
        assert (again.output, again.prompt, again.checks, again.new_tokens) == (cell.output, cell.prompt, cell.checks, cell.new_tokens)
        assert again.exact == cell.exact and again.f1 == pytest.approx(cell.f1) and again.cosine == pytest.approx(cell.cosine)
    assert [(v.row, v.a, v.b, v.choice, v.blind) for v in reopened.votes.values()] == \
           [(v.row, v.a, v.b, v.choice, v.blind) for v in exp.votes.values()]
    assert [(v.row, v.first, v.second, v.winner) for v in reopened.verdicts.values()] == \
           [(v.row, v.first, v.second, v.winner) for v in exp.verdicts.values()]
    assert ex.summarize(reopened) == before
    info = {i.id: i for i in ExperimentStore(path).list()}[exp.id]
    assert (info.cells, info.votes, info.verdicts, info.rows, info.variants) == (6, 3, 3, 3, 2)

    # export: one CSV line per cell, JSON with everything
    csv_text = ex.to_csv(reopened)
    assert csv_text.count("\n") == 7 and exp.cells[(0, "A", SMOL)].output.split("\n")[0] in csv_text
    data = json.loads(ex.to_json(reopened))
    assert len(data["cells"]) == 6 and len(data["votes"]) == 3 and len(data["verdicts"]) == 3
    assert data["variants"][1]["format"] == "mustache" and data["summary"][0]["arm"] == f"A@{SMOL}"


def test_rerun_after_editing_a_template_reuses_unchanged_cells(real_run, smollm2):
    store, exp, *_ = real_run
    edited = (VARIANTS[0], PromptVariant("B", "{{question}} Answer with one word.", system="You are {{tone}}.",
                                         format="mustache"))
    child, action, reused = ex.prepare(store, exp, name="capitals v2", variants=edited, rows=ROWS, settings=TINY,
                                       checks=exp.checks, rubric=exp.rubric)
    assert action == "rerun" and reused == 3 and child.parent_id == exp.id and child.id != exp.id
    assert [(r, a.variant) for r, a in child.pending()] == [(0, "B"), (1, "B"), (2, "B")]
    assert not child.votes  # every vote involved the edited template B
    calls = []
    ex.run(child, store, lambda m: smollm2, generator=lambda *a: calls.append(a) or generate(*a))
    assert len(calls) == 3 and not child.pending()
    assert store.load(exp.id).cells[(0, "B", SMOL)].output == exp.cells[(0, "B", SMOL)].output  # the old one stands
    same, action, _ = ex.prepare(store, child, name="capitals v2 (renamed)", variants=edited, rows=ROWS,
                                 settings=TINY, checks=(Check("contains", "paris"),), rubric=exp.rubric)
    assert action == "same" and same is child
    again = store.load(child.id)
    assert again.name == "capitals v2 (renamed)" and len(again.cells) == 6
    assert [len(c.checks) for c in again.cells.values()] == [1] * 6  # rescored with the new check


def test_a_model_that_fails_halfway_keeps_the_finished_cells(smollm2, tmp_path):
    store = ExperimentStore(tmp_path / "e.sqlite3")
    rows = (ROWS[0], InputRow({"question": "word " * 9000, "tone": "terse"}), ROWS[2])  # row 2 is too long
    exp = Experiment("flaky", VARIANTS, rows, TINY)
    calls = []

    def flaky(*args):  # the real generation; the fifth call fails the way a crashing model does
        calls.append(args)
        if len(calls) == 5:
            raise RuntimeError("simulated failure in the model")
        return generate(*args)

    with pytest.raises(PlaygroundError) as err:
        ex.run(exp, store, lambda m: smollm2, generator=flaky)
    msg = str(err.value)
    assert "stopped at row 3, template A" in msg and "simulated failure" in msg
    assert "The 2 finished cell(s) are saved; 2 remain" in msg
    saved = ExperimentStore(tmp_path / "e.sqlite3").load(exp.id)
    assert {k: c.ok for k, c in saved.cells.items()} == {
        (0, "A", SMOL): True, (0, "B", SMOL): True, (1, "A", SMOL): False, (1, "B", SMOL): False}
    assert "8,192" in saved.cells[(1, "A", SMOL)].error  # the context length, named
    # running again fills in only what is missing (and retries the failed row, which fails the same way)
    report = ex.run(saved, store, lambda m: smollm2)
    assert (report.generated, report.failed, report.skipped) == (2, 2, 2)
    assert sorted(k for k, c in store.load(exp.id).cells.items() if c.ok) == [
        (0, "A", SMOL), (0, "B", SMOL), (2, "A", SMOL), (2, "B", SMOL)]


def test_a_model_that_cannot_load_stops_the_run_with_a_message(tmp_path):
    exp = Experiment("missing model", VARIANTS, ROWS[:1], RunSettings(("nobody/no-such-model",), TINY.generation))

    def load(model_id):
        from playground.loading import load_causal_lm
        return load_causal_lm(model_id)

    with pytest.raises(PlaygroundError, match="The run stopped at row 1, template A, nobody/no-such-model"):
        ex.run(exp, ExperimentStore(tmp_path / "e.sqlite3"), load)


def test_a_run_on_two_real_models_gives_a_column_per_template_and_model(smollm2, gemma, tmp_path):
    """2 templates x 2 rows on SmolLM2 and Gemma 3 at once: four arms, each cell made by its own model
    with its own chat template, the same text as that model's bare generation call, all saved."""
    gem = "gemma-3-270m"
    models = {SMOL: smollm2, gem: gemma}
    settings = RunSettings((SMOL, gem), GenerationSettings(max_new_tokens=6))
    store = ExperimentStore(tmp_path / "two.sqlite3")
    exp = Experiment("two models", VARIANTS, ROWS[:2], settings, checks=(Check("length", hi=200),))
    loaded = []
    report = ex.run(exp, store, lambda m: loaded.append(m) or models[m])
    assert (report.generated, report.failed) == (8, 0)
    assert [exp.arm_label(a) for a in exp.arms] == [f"A · {SMOL}", f"B · {SMOL}", f"A · {gem}", f"B · {gem}"]
    assert len(exp.pairs()) == 6 and set(loaded) == {SMOL, gem}
    for (row, variant, model_id), cell in exp.cells.items():
        assert cell.ok and cell.output.strip() and 1 <= cell.new_tokens <= 6
        v = VARIANTS[0] if variant == "A" else VARIANTS[1]
        rendered = v.render(dict(ROWS[row].values), extra="ignore")
        if model_id == SMOL:  # SmolLM2 has a chat template: the system message is its own turn
            assert cell.prompt.startswith("<|im_start|>") and rendered.user in cell.prompt
            bare = generate(smollm2, rendered.user, settings.generation, system=rendered.system or None)
        else:  # the bundled Gemma 3 270M is a base model without one: plain text, system message in front
            text = f"{rendered.system}\n\n{rendered.user}" if rendered.system else rendered.user
            assert "<|im_start|>" not in cell.prompt and cell.prompt == text
            bare = generate(gemma, rendered.user, settings.generation, system=rendered.system or None)
        assert cell.output == bare.text, (row, variant, model_id)
    # the two models do not say the same thing on every cell (they are different models)
    assert any(exp.cells[(r, v, SMOL)].output != exp.cells[(r, v, gem)].output for r in range(2) for v in "AB")
    again = ExperimentStore(tmp_path / "two.sqlite3").load(exp.id)
    assert again.settings.model_ids == (SMOL, gem) and set(again.cells) == set(exp.cells)
    assert [s.label for s in ex.summarize(again)] == [exp.arm_label(a) for a in exp.arms]


def test_model_judge_on_smollm2_gives_structured_verdicts(real_run, smollm2):
    store, exp, *_ = real_run
    x, y = exp.arms
    judge = ex.model_judge(smollm2, GenerationSettings(max_new_tokens=16))
    verdicts = ex.run_judge(exp, judge, SMOL, pairs=[(x, y)], rows=[0], store=store)
    assert len(verdicts) == 1
    v = verdicts[0]
    for raw in (v.first, v.second):  # a 135M model's verdicts are noise: only their shape is checked
        assert raw.choice in ("1", "2", "tie") and raw.text.strip() and raw.reason
    assert v.outcome in ("x", "y", "tie") and v.judge_model == SMOL
    assert store.load(exp.id).verdicts[(0, ex.pair_key(x, y), SMOL)].first == v.first


# --- the page -------------------------------------------------------------------------------------

PAGE = "views/prompt_ab.py"


def _shown(at) -> str:
    from tests.conftest import texts

    return texts(at)


@pytest.fixture
def own_data(tmp_path, monkeypatch):
    """A database of this test's own (the page's store follows PLAYGROUND_DATA)."""
    monkeypatch.setenv("PLAYGROUND_DATA", str(tmp_path))
    return tmp_path


def test_page_bad_input_gets_clear_messages_without_running_anything(own_data):
    from tests.conftest import app_test

    at = app_test(PAGE, timeout=300)
    assert not at.exception and not at.error
    assert at.title[0].value == "Prompt A/B"
    assert at.text_area(key="ab_tpl_0").value.endswith("Question: {question}")
    assert "Press **Run** to fill the grid" in _shown(at)
    assert "Question: What is the capital of France?" in _shown(at)  # the preview, before any model runs
    # a jinja2 template that reaches for Python internals
    at.selectbox(key="ab_fmt_1").set_value("jinja2")
    at.text_area(key="ab_tpl_1").set_value("{{ ''.__class__.__mro__ }} {{ question }}").run()
    assert any("tries to reach Python internals" in e.value for e in at.error)
    at.button(key="ab_run").click().run()
    assert not at.exception
    assert any("Fix the template error(s) first" in e.value for e in at.error)
    # two variables, pasted without a header: which columns the lines are is unknown
    at.text_area(key="ab_tpl_1").set_value("{{ question }} (context: {{ context }})").run()
    assert at.session_state["ab_cols"] == ["question", "context", "reference"]
    at.text_area(key="ab_paste").set_value("why?\nhow?")
    at.button(key="ab_paste_use").click().run()
    assert any("paste a table whose first line names the columns" in e.value for e in at.error)
    # a CSV saved in Windows-1252
    at.file_uploader(key="ab_upload").set_value(("cafe.csv", "question,context\nCafé?,au lait\n".encode("cp1252"),
                                                 "text/csv")).run()
    assert any("cafe.csv is not UTF-8: byte 0xe9" in e.value for e in at.error)
    # thousands of rows
    big = "question,context\n" + "".join(f"q{i},c{i}\n" for i in range(3000))
    at.file_uploader(key="ab_upload").set_value(("big.csv", big.encode(), "text/csv")).run()
    assert any("has 3,000 rows; an experiment holds at most 1,000" in e.value for e in at.error)
    # a good file, with an unused column and a reference column
    good = "question,context,answer,id\nWhy is the sea salty?,rivers,minerals,1\n"
    at.file_uploader(key="ab_upload").set_value(("good.csv", good.encode(), "text/csv")).run()
    assert at.selectbox(key="ab_upload_ref").value == "answer"
    at.button(key="ab_upload_use").click().run()
    assert any("'id' are used by no template and are hidden" in w.value for w in at.warning)
    table = at.dataframe[0].value
    assert list(table.columns) == ["question", "context", "reference"] and table.iloc[0]["reference"] == "minerals"
    assert not at.exception


def test_page_end_to_end_run_vote_save_reopen_rerun(own_data):
    from tests.conftest import app_test

    at = app_test(PAGE, timeout=600)
    at.text_input(key="ab_name").set_value("page e2e")
    at.text_area(key="ab_paste").set_value(
        "question\treference\nWhat is the capital of Italy?\tRome\nWhat is 2 + 2?\t4\nName a primary colour.\tred")
    at.button(key="ab_paste_use").click().run()
    assert at.dataframe[0].value["question"].tolist()[1] == "What is 2 + 2?"
    at.slider(key="ab_max_tokens").set_value(8)
    at.button(key="ab_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Generated 6 output(s)" in s.value for s in at.success), _shown(at)
    exp_id = at.session_state["ab_exp"]
    assert at.query_params["exp"] in (exp_id, [exp_id])
    saved = ExperimentStore().load(exp_id)  # the page's database (PLAYGROUND_DATA)
    assert saved.name == "page e2e" and len(saved.cells) == 6 and all(c.ok for c in saved.cells.values())
    grid = next(d.value for d in at.dataframe if "A" in d.value.columns and "B" in d.value.columns)
    assert grid["question"].tolist()[0] == "What is the capital of Italy?"
    assert grid["A"].tolist() == [saved.cells[(i, "A", SMOL)].output for i in range(3)]
    assert "Against the reference: exact match" in _shown(at)
    # the cell picked under Cell details, token by token (kept in memory for the session that generated it)
    assert sum('class="answer-tokens"' in m.value for m in at.markdown) == 1
    assert at.radio(key="ab_shade").value == "off"

    # vote (blind by default): the vote lands on the arm shown as A on the first row, and moves on
    row = at.session_state["ab_vote_row"]
    shown_a, _ = ex.shown_pair(saved, row, *saved.arms, blind=True)
    at.button(key="ab_vote_A").click().run()
    assert not at.exception
    votes = ExperimentStore().load(exp_id).votes
    assert len(votes) == 1 and next(iter(votes.values())).winner == shown_a
    assert at.session_state["ab_vote_row"] != row
    assert "Voted on 1 of 3 rows" in "\n".join(p.proto.text for p in at.get("progress"))
    summary = next(d.value for d in at.dataframe if "voters' win rate [95% CI]" in d.value.columns).set_index("template")
    # one vote, one win: Wilson for 1 of 1 is [20.7%, 100%]; the other side 0 of 1: [0%, 79.3%]
    assert summary.loc[shown_a.variant, "voters' win rate [95% CI]"] == "100% [21%, 100%] (n=1)"
    assert summary.loc[({"A", "B"} - {shown_a.variant}).pop(), "voters' win rate [95% CI]"] == "0% [0%, 79%] (n=1)"
    assert f"?exp={exp_id}" in _shown(at)  # the link

    # rename and save: same experiment, no new outputs
    at.text_input(key="ab_name").set_value("page e2e (saved)")
    at.button(key="ab_save").click().run()
    assert ExperimentStore().load(exp_id).name == "page e2e (saved)"

    # reopen from a link, in a new session: everything is back
    again = app_test(PAGE, query={"exp": exp_id}, timeout=600)
    assert not again.exception
    assert again.text_input(key="ab_name").value == "page e2e (saved)"
    assert again.slider(key="ab_max_tokens").value == 8
    assert again.dataframe[0].value["reference"].tolist() == ["Rome", "4", "red"]
    assert "6 outputs saved" in _shown(again)
    assert not any('class="answer-tokens"' in m.value for m in again.markdown)  # reopened: the text, as saved
    assert "Voted on 1 of 3 rows" in "\n".join(p.proto.text for p in again.get("progress"))

    # rerun after editing template B: a new experiment, A's outputs reused, B regenerated
    again.text_area(key="ab_sys_1").set_value("Answer with one word.")
    again.button(key="ab_run").click().run()
    assert not again.exception
    assert any("rerun of" in s.value and "3 unchanged output(s) reused" in s.value for s in again.success), _shown(again)
    child = ExperimentStore().load(again.session_state["ab_exp"])
    assert child.parent_id == exp_id and len(child.cells) == 6 and child.variants[1].system == "Answer with one word."

    # and the first one is still in the list, to open again
    fresh = app_test(PAGE, timeout=300)
    fresh.selectbox(key="ab_open_pick").set_value(exp_id)
    fresh.button(key="ab_open").click().run()
    assert fresh.text_input(key="ab_name").value == "page e2e (saved)"
    assert fresh.session_state["ab_exp"] == exp_id


def test_page_two_models_and_the_judge_button(own_data):
    """On the page: pick both bundled chat models, run one row, then run the judge from its tab."""
    from tests.conftest import app_test

    gem = "gemma-3-270m"
    at = app_test(PAGE, timeout=600)
    at.text_input(key="ab_name").set_value("two models")
    at.text_area(key="ab_paste").set_value("question\treference\nWhat is the capital of Spain?\tMadrid")
    at.button(key="ab_paste_use").click().run()
    at.multiselect(key="ab_models").set_value([SMOL, gem])
    at.slider(key="ab_max_tokens").set_value(6)
    at.button(key="ab_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Generated 4 output(s)" in s.value for s in at.success), _shown(at)
    exp_id = at.session_state["ab_exp"]
    saved = ExperimentStore().load(exp_id)
    arms = [f"A · {SMOL}", f"B · {SMOL}", f"A · {gem}", f"B · {gem}"]
    grid = next(d.value for d in at.dataframe if arms[0] in d.value.columns)
    assert [c for c in grid.columns if " · " in c] == arms
    assert grid[arms[2]].tolist() == [saved.cells[(0, "A", gem)].output]
    assert at.selectbox(key="ab_pair").options[0] == f"{arms[0]} vs {arms[1]}" and len(at.selectbox(key="ab_pair").options) == 6

    # the judge: 6 pairs x 1 row, each asked in both orders
    at.slider(key="ab_judge_tokens").set_value(12)
    judge = next(b for b in at.button if b.key == "ab_judge_run")
    assert judge.label == "Run the judge (12 generations at most)"
    judge.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("6 verdict(s) saved." in s.value for s in at.success), _shown(at)
    verdicts = ExperimentStore().load(exp_id).verdicts
    assert len(verdicts) == 6 and {v.judge_model for v in verdicts.values()} == {SMOL}
    table = next(d.value for d in at.dataframe if "reason (swapped)" in d.value.columns)
    assert len(table) == 6 and set(table["pair"]) == {f"{x} vs {y}" for i, x in enumerate(arms) for y in arms[i + 1:]}
    assert all(isinstance(r, str) and r for r in table["reason (x first)"])  # the judge's reasons, kept
    summary = next(d.value for d in at.dataframe if "judge win rate [95% CI]" in d.value.columns)
    assert summary["template"].tolist() == arms
    # every arm took part in 3 judged comparisons
    assert all(w.endswith("(n=3)") for w in summary["judge win rate [95% CI]"]), summary["judge win rate [95% CI]"]


@pytest.mark.browser
def test_prompt_ab_in_chromium(app_url, page):
    from tests.conftest import screenshot, wait_idle

    page.goto(f"{app_url}/prompt_ab")
    page.get_by_role("heading", name="Prompt A/B", exact=True).wait_for()
    page.get_by_text("Press Run to fill the grid").wait_for()
    wait_idle(page)
    from playwright.sync_api import expect  # waits: on a warm server the editors may still be mounting

    expect(page.locator("textarea").nth(1)).to_have_value("Answer in as few words as possible.\nQuestion: {question}")
    # a small run: 8 new tokens (keyboard on the slider: Home is 1, then 7 steps)
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Max new tokens").locator('input[type="range"]')
    slider.focus()
    slider.press("Home")
    for _ in range(7):
        slider.press("ArrowRight")
    page.wait_for_function("() => [...document.querySelectorAll('input[type=range]')].some(e => e.value === '8')")
    wait_idle(page)
    page.get_by_role("button", name="Run", exact=True).click()
    done_or_error = page.get_by_text("Generated 6 output(s)").or_(page.locator('[data-testid="stAlertContentError"]'))
    done_or_error.first.wait_for(timeout=420_000)
    if not page.get_by_text("Generated 6 output(s)").count():
        screenshot(page, "prompt-ab-failed")  # what the page showed instead
        pytest.fail(f"the run did not finish: {page.locator('[data-testid=stAlert]').all_inner_texts()}")
    wait_idle(page)
    assert "exp=" in page.url  # the link to this experiment
    # what the page shows is read back from the database after the run (the AppTest checks the rows)
    page.get_by_text("6 outputs saved").wait_for()
    page.get_by_role("tab", name="Vote").click()
    page.get_by_role("button", name="A is better").click()
    page.get_by_text("Voted on 1 of 3 rows").wait_for()  # counted from the saved votes
    wait_idle(page)

    page.get_by_role("tab", name="Grid").click()
    page.set_viewport_size({"width": 1400, "height": 1500})
    page.get_by_role("heading", name="5 · Results", exact=True).scroll_into_view_if_needed()
    page.get_by_role("tabpanel", name="Grid").get_by_text("Cell details").wait_for()
    page.get_by_text("Against the reference: exact match").wait_for()
    page.wait_for_timeout(1000)
    screenshot(page, "prompt-ab")
