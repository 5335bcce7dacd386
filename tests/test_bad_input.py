"""Hostile input, class by class: what a person writes that the server runs is bounded in time and
size, uploaded text has one reader with precise messages, and a bound that is hit is a clear
message while the rest of the server keeps answering.

Classes: catastrophic regex, regex syntax RE2 refuses, runaway jinja2 (nested loops, empty
body), huge template output, deep JSON, too many rows / columns, oversized upload, Latin-1 /
Windows-1252 bytes, NUL and other binary bytes, empty file, over-long text boxes; then one
session hitting bounds while another works (threads, and a real server with two browsers),
and the Prompt A/B page showing bounds as messages (AppTest).
"""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from playground import experiments as ex
from playground.errors import InputError
from playground.experiments import Check, Experiment, InputRow
from playground.limits import (
    JSON_DEPTH, RENDER_SECONDS, TEMPLATE_CHARS, UPLOAD_BYTES, LimitError, TimeLimitError,
)
from playground.prompts import PromptVariant
from playground.uploads import json_depth, read_text

NESTED_EMPTY = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ q }}"
NESTED_TEXT = "{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}{{ q }}"
CATASTROPHIC = r"(a+)+$"
EVIL_OUTPUT = "a" * 32 + "b"  # Python's re takes about 2^32 steps here, holding the GIL


# --- regex checks ---------------------------------------------------------------------------

def test_catastrophic_regex_answers_at_once():
    check = Check("regex", CATASTROPHIC).validate()
    start = time.perf_counter()
    assert check(EVIL_OUTPUT) is False
    assert check("a" * 200_000 + "b") is False
    assert check("aaaa") is True
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("pattern, fragment", [
    (r"(\w+) \1", "uses backreferences"),
    (r"(?P<w>\w+) (?P=w)", "uses backreferences"),
    (r"Paris(?= is)", "uses lookahead and lookbehind"),
    (r"(?<!not )Paris", "uses lookahead and lookbehind"),
    (r"(?>a+)b", "atomic groups"),
    (r"(a{1000}){1000}", "cannot be used"),  # valid for Python, too big a program for RE2
    (r"(unclosed", "does not compile"),
])
def test_regex_syntax_that_re2_refuses_is_named(pattern, fragment):
    with pytest.raises(InputError) as err:
        Check("regex", pattern).validate()
    assert fragment in str(err.value) and pattern in str(err.value)


def test_regex_too_long_is_refused_with_its_length():
    with pytest.raises(InputError, match=r"pattern is 600 characters; at most 500 characters"):
        Check("regex", "a" * 600).validate()


def test_valid_json_check_on_deeply_nested_output_is_false_not_a_crash():
    assert Check("valid JSON")("[" * 100_000 + "]" * 100_000) is False  # RecursionError before the bound
    assert Check("valid JSON")("[" * 20 + "]" * 20) is True


# --- templates --------------------------------------------------------------------------------

def test_runaway_jinja2_with_an_empty_body_stops_within_seconds():
    v = PromptVariant("A", NESTED_EMPTY, format="jinja2")
    v.variables  # noqa: B018 - parsed before the clock starts
    start = time.perf_counter()
    with pytest.raises(TimeLimitError, match=r"Filling in Template A took more than 2 seconds and was stopped"):
        v.render({"q": "hi"})  # writes nothing: only the clock can stop it
    took = time.perf_counter() - start
    assert RENDER_SECONDS.value <= took < RENDER_SECONDS.value + 2


def test_runaway_jinja2_that_writes_stops_at_a_bound():
    """It reaches the output bound (200,000 characters) in about a second on an idle machine; on a
    loaded one the clock may stop it first. Either way it stops, with the bound named."""
    v = PromptVariant("A", NESTED_TEXT, format="jinja2")
    v.variables  # noqa: B018
    start = time.perf_counter()
    with pytest.raises(LimitError, match=r"Template A gives more than 200,000 characters \(stopped at 200,001\)|"
                                         r"Filling in Template A took more than 2 seconds"):
        v.render({"q": "hi"})
    assert time.perf_counter() - start < RENDER_SECONDS.value + 2


def test_runaway_mustache_sections_stop_within_seconds():
    items = [{"x": "."} for _ in range(1000)]
    v = PromptVariant("M", "{{#items}}{{#items}}{{#items}}{{x}}{{/items}}{{/items}}{{/items}}", format="mustache")
    start = time.perf_counter()
    with pytest.raises(LimitError):
        v.render({"items": items})
    assert time.perf_counter() - start < RENDER_SECONDS.value + 2


@pytest.mark.parametrize("template, fmt, fragment", [
    ("{{ 'x' * 10**9 }}{{ q }}", "jinja2", "Repeating with * would be 1,000,000,000"),
    ("{{ q|center(1000000000) }}", "jinja2", "The filter 'center' is given 1,000,000,000"),
    ("{{ '%0999999999d'|format(1) }}{{ q }}", "jinja2", "asks for a width of 999,999,999"),
    ("{{ '{:>999999999}'.format(q) }}", "jinja2", "asks for a width of 999,999,999"),
    ("{% set ns = namespace(s=q) %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
     "jinja2", "Joining text with ~ would be"),
    ("{% for i in range(100000) %}{{ q }}{% endfor %}", "jinja2", "gives more than 200,000 characters"),
    ("{{ 2 ** 100000 }}{{ q }}", "jinja2", "exponents above 64 are refused"),
    ("{{ '%0999999999d' % 1 }}{{ q }}", "jinja2", "asks for a width of 999,999,999"),
    ("{q:>999999999}", "f-string", "asks for a width of 999,999,999"),
    ("{q}" * 50, "f-string", "gives 250,000 characters for this row"),
    ("{{{q}}}" * 50, "mustache", "gives 250,000 characters for this row"),
])
def test_huge_template_output_is_refused_before_it_is_built(template, fmt, fragment):
    v = PromptVariant("A", template, format=fmt)
    start = time.perf_counter()
    with pytest.raises(LimitError) as err:
        v.variables  # noqa: B018 - a width is refused here already; the rest when rendering
        v.render({"q": "x" * 5000})
    assert fragment in str(err.value), str(err.value)
    assert time.perf_counter() - start < 1.0  # refused by a size bound, not by the clock


def test_a_normal_jinja2_template_renders_as_before():
    v = PromptVariant("A", "{% for w in q.split() %}{{ w|upper }}{% if not loop.last %}-{% endif %}{% endfor %}",
                      system="Be {{ tone }}.", format="jinja2")
    r = v.render({"q": "one two three", "tone": "brief"})
    assert (r.system, r.user) == ("Be brief.", "ONE-TWO-THREE")


def test_template_and_system_message_lengths_are_bounded():
    with pytest.raises(LimitError, match=r"Template A is 20,001 characters; at most 20,000"):
        PromptVariant("A", "x" * (TEMPLATE_CHARS.value - 2) + "{q}").variables
    with pytest.raises(LimitError, match=r"Template A's system message is 10,001 characters; at most 10,000"):
        PromptVariant("A", "{q}", system="s" * 10_001).variables


def test_a_run_gives_the_runaway_template_an_error_cell_and_runs_the_other(smollm2):
    from playground.experiments import RunSettings
    from playground.generate import GenerationSettings

    variants = (PromptVariant("A", "Answer: {q}"), PromptVariant("B", NESTED_EMPTY, format="jinja2"))
    rows = (InputRow({"q": "2+2?"}), InputRow({"q": "3+3?"}))
    exp = Experiment("runaway", variants, rows, RunSettings(("smollm2-135m-instruct",), GenerationSettings(max_new_tokens=3)))
    start = time.perf_counter()
    report = ex.run(exp, None, lambda m: smollm2)
    assert report.generated == 2 and report.failed == 2
    b0, b1 = exp.cells[(0, "B", "smollm2-135m-instruct")], exp.cells[(1, "B", "smollm2-135m-instruct")]
    assert "took more than 2 seconds" in b0.error and "Not tried again" in b1.error
    assert exp.cells[(0, "A", "smollm2-135m-instruct")].ok
    assert time.perf_counter() - start < 30  # the second row did not wait another two seconds for B


# --- uploads: one reader ------------------------------------------------------------------------

def test_latin1_and_windows_1252_bytes_name_the_byte_and_suggest_utf8():
    with pytest.raises(InputError) as err:
        read_text("name,city\nRené,Zürich\n".encode("latin-1"), "people.csv")
    msg = str(err.value)
    assert "people.csv is not UTF-8: byte 0xe9 at position 13 (line 2, column 4)" in msg
    assert "Windows-1252 or Latin-1" in msg and "'René,Zürich'" in msg and "CSV UTF-8" in msg
    with pytest.raises(InputError, match=r"byte 0x93 at position 0 \(line 1, column 1\)"):
        read_text("“quoted”".encode("cp1252"), "smart.txt")


def test_nul_binary_and_control_bytes_are_not_text():
    with pytest.raises(InputError, match=r"does not look like text: it holds NUL bytes \(the first at byte 4, line 2\)"):
        read_text(b"a,b\n\x00\x00\x00", "nul.csv")
    with pytest.raises(InputError, match=r"it is a ZIP archive \(an .xlsx, .docx or .zip file\)"):
        ex.parse_upload("sheet.csv", b"PK\x03\x04\x14\x00\x06\x00" + bytes(200))
    with pytest.raises(InputError, match="it is a PNG image"):
        read_text(b"\x89PNG\r\n\x1a\n" + bytes(20), "image.txt")
    with pytest.raises(InputError, match=r"holds the control character U\+0001 \(the first at line 1, column 3\)"):
        read_text(b"ab\x01cd", "ctl.txt")


def test_empty_and_oversized_files_give_their_sizes():
    with pytest.raises(InputError, match=r"empty.csv is empty \(0 bytes\)"):
        ex.parse_upload("empty.csv", b"")
    big = b"question\n" + b"x" * UPLOAD_BYTES.value
    with pytest.raises(InputError, match=r"big.csv is 5.0 MB \(5,242,889 bytes\); the limit is 5.0 MB"):
        ex.parse_upload("big.csv", big)
    with pytest.raises(InputError, match=r"only whitespace"):
        ex.parse_upload("blank.jsonl", b" \n\n ")


def test_byte_order_marks_say_the_encoding():
    assert read_text("\ufeffquestion\nWhy?".encode("utf-8"), "bom.csv") == "question\nWhy?"
    assert read_text("question\tanswer\nCafé?\toui\n".encode("utf-16"), "excel.txt") == "question\tanswer\nCafé?\toui\n"
    assert ex.parse_upload("excel.tsv", "question\tanswer\nCafé?\toui\n".encode("utf-16")) == [
        {"question": "Café?", "answer": "oui"}]
    with pytest.raises(InputError, match="starts with a UTF-16 byte-order mark but is not valid UTF-16"):
        read_text(b"\xff\xfeh\x00\x00\xd8", "half.txt")


def test_deep_json_is_refused_before_parsing():
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(InputError, match=r"deep.json nests arrays or objects 100,000 levels deep; at most 32"):
        ex.parse_upload("deep.json", deep)
    line = b'{"question": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"
    with pytest.raises(InputError, match=r"5,001 levels deep"):
        ex.parse_upload("deep.jsonl", b'{"question": "ok"}\n' + line)
    assert json_depth('{"a": "[[[[", "b": [1, {"c": 2}]}') == 3
    assert ex.parse_upload("ok.json", b'[{"question": "[[[[not nesting]]]]"}]') == [{"question": "[[[[not nesting]]]]"}]
    assert JSON_DEPTH.value == 32


def test_json_with_a_huge_number_is_a_message_not_a_crash():
    with pytest.raises(InputError, match="cannot be read as JSON"):
        ex.parse_upload("n.jsonl", b'{"question": ' + b"9" * 5000 + b"}\n")


def test_too_many_rows_and_columns_are_refused_with_the_counts():
    csv = "question\n" + "".join(f"q{i}\n" for i in range(1500))
    with pytest.raises(InputError, match=r"many.csv has 1,500 rows; an experiment holds at most 1,000"):
        ex.parse_upload("many.csv", csv.encode())
    jsonl = "".join(f'{{"question": "q{i}"}}\n' for i in range(1200))
    with pytest.raises(InputError, match=r"many.jsonl has 1,200 records"):
        ex.parse_upload("many.jsonl", jsonl.encode())
    wide = ",".join(f"c{i}" for i in range(80)) + "\n" + ",".join("x" for _ in range(80)) + "\n"
    with pytest.raises(InputError, match=r"wide.csv's header line is 80 columns; at most 50"):
        ex.parse_upload("wide.csv", wide.encode())
    with pytest.raises(InputError, match=r"pasted text has 1,502 lines"):
        ex.parse_pasted("question\n" + "\n".join(f"q{i}" for i in range(1501)), ["question"])


def test_over_long_values_names_and_rubrics_are_refused_with_the_numbers():
    with pytest.raises(InputError, match=r"row 2, column 'question' is 20,001 characters; at most 20,000"):
        ex.rows_from_records([{"question": "ok"}, {"question": "x" * 20_001}])
    v = (PromptVariant("A", "{q}"), PromptVariant("B", "Q: {q}"))
    with pytest.raises(InputError, match=r"name is 201 characters; at most 200"):
        Experiment("n" * 201, v, (InputRow({"q": "a"}),)).validate()
    with pytest.raises(InputError, match=r"rubric is 4,001 characters; at most 4,000"):
        Experiment("ok", v, (InputRow({"q": "a"}),), rubric="r" * 4001).validate()


def test_rag_text_uploads_use_the_same_reader():
    from playground.rag import documents

    with pytest.raises(InputError, match=r"notes.txt is not UTF-8: byte 0xe9 at position 3 \(line 1, column 4\)"):
        documents.load_bytes("notes.txt", "café".encode("cp1252"))
    assert documents.load_bytes("u16.md", "# Grüße".encode("utf-16")).text == "# Grüße"


# --- one session hits the bounds, another keeps working ----------------------------------------

def _latencies(stop: threading.Event, out: list[float]) -> None:
    """Real work in small requests (render a template, parse a CSV, score two answers), timed one by one."""
    v = PromptVariant("A", "Answer briefly: {question}", system="You are {tone}.")
    data = ("question,reference\n" + "".join(f"q{i},r{i}\n" for i in range(50))).encode()
    while not stop.is_set():
        t = time.perf_counter()
        v.render({"question": "Why is the sky blue?", "tone": "terse"})
        ex.rows_from_records(ex.parse_upload("q.csv", data), reference_column="reference")
        ex.token_f1("the sky is blue", "blue")
        out.append(time.perf_counter() - t)
        time.sleep(0.01)


def test_another_thread_keeps_answering_while_one_hits_every_bound():
    stop = threading.Event()
    latencies: list[float] = []
    worker = threading.Thread(target=_latencies, args=(stop, latencies), daemon=True)
    worker.start()
    time.sleep(0.3)
    baseline = list(latencies)
    results: dict[str, object] = {}

    def hostile() -> None:  # one session: a catastrophic regex check, then a runaway template
        t = time.perf_counter()
        results["regex"] = Check("regex", CATASTROPHIC).validate()(EVIL_OUTPUT * 1000)
        try:
            PromptVariant("B", NESTED_EMPTY, format="jinja2").render({"q": "x"})
        except TimeLimitError as exc:
            results["template"] = str(exc)
        results["seconds"] = time.perf_counter() - t

    start = len(latencies)
    h = threading.Thread(target=hostile)
    h.start()
    h.join(timeout=30)
    during = latencies[start:]
    stop.set()
    worker.join(timeout=5)
    assert not h.is_alive(), "the hostile session did not stop"
    assert results["regex"] is False and "took more than 2 seconds" in results["template"]
    assert results["seconds"] < RENDER_SECONDS.value + 1.5
    assert len(during) >= 20, f"the other thread answered only {len(during)} times in {results['seconds']:.1f} s"
    assert max(during) < 0.5, f"the other thread waited {max(during):.2f} s (median {statistics.median(during):.3f})"
    assert baseline  # it answered before, too


@pytest.mark.browser
def test_a_second_browser_session_answers_while_the_first_hits_the_bounds(app_url, browser):
    """On a real `streamlit run` server: session 1 opens a saved experiment whose template B loops
    without end and whose regex check is catastrophic on the saved outputs, and saves it (which
    re-runs the checks); session 2 loads a page meanwhile and must answer within seconds."""
    from playground.experiments import Cell, ExperimentStore, RunSettings
    from tests.conftest import wait_idle

    smol = "smollm2-135m-instruct"
    exp = Experiment("hostile", (PromptVariant("A", "Say: {q}"), PromptVariant("B", NESTED_EMPTY, format="jinja2")),
                     (InputRow({"q": "a"}), InputRow({"q": "b"})), RunSettings((smol,)),
                     checks=(Check("regex", CATASTROPHIC),))
    for row in range(2):
        for variant in ("A", "B"):
            exp.cells[(row, variant, smol)] = Cell(row, variant, smol, output=EVIL_OUTPUT * 10, finish_reason="length")
    ExperimentStore().create(exp)  # the server's database: the tests and the server share PLAYGROUND_DATA

    def new_page():
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        p = ctx.new_page()
        p.set_default_timeout(120_000)
        return ctx, p

    c1, first = new_page()
    c2, second = new_page()
    try:
        t = time.perf_counter()
        second.goto(f"{app_url}/")
        second.get_by_role("heading", name="LLM Playground").first.wait_for()
        baseline = time.perf_counter() - t  # the other session's page, on an idle server
        wait_idle(second)

        first.goto(f"{app_url}/prompt_ab?exp={exp.id}")  # the preview renders template B: a runaway
        first.get_by_role("heading", name="Prompt A/B", exact=True).wait_for()
        t = time.perf_counter()
        second.reload()
        second.get_by_role("heading", name="LLM Playground").first.wait_for()
        during = time.perf_counter() - t
        first.get_by_text("took more than 2 seconds and was stopped").first.wait_for(state="attached", timeout=30_000)
        wait_idle(first)
        first.get_by_role("button", name="Save", exact=True).click()  # re-runs the regex check on every output
        t = time.perf_counter()
        second.reload()
        second.get_by_role("heading", name="LLM Playground").first.wait_for()
        during_save = time.perf_counter() - t
        first.get_by_text("Saved 'hostile'.").wait_for(timeout=30_000)
        limit = max(5.0, 3 * baseline)
        assert during < limit and during_save < limit, (
            f"the second session took {during:.1f} s / {during_save:.1f} s (idle: {baseline:.1f} s)")
    finally:
        c1.close()
        c2.close()
    saved = ExperimentStore().load(exp.id)
    assert all(c.checks == (False,) for c in saved.cells.values())  # (a+)+$ does not match ...ab


# --- the Prompt A/B page ------------------------------------------------------------------------

def test_page_shows_each_bound_as_a_message(monkeypatch, tmp_path):
    from tests.conftest import app_test, texts

    monkeypatch.setenv("PLAYGROUND_DATA", str(tmp_path))
    at = app_test("views/prompt_ab.py", timeout=120)
    assert not at.exception
    # a runaway jinja2 template: the preview says it was stopped, the page goes on
    at.selectbox(key="ab_fmt_1").set_value("jinja2")
    at.text_area(key="ab_tpl_1").set_value(NESTED_EMPTY.replace("{{ q }}", "{{ question }}"))
    start = time.perf_counter()
    at.run()
    assert time.perf_counter() - start < 15
    assert not at.exception
    assert any("Filling in Template B took more than 2 seconds and was stopped" in w.value for w in at.warning), texts(at)
    # a JSON upload nested too deeply, and one too large
    at.file_uploader(key="ab_upload").set_value(("deep.json", b"[" * 50_000 + b"]" * 50_000, "application/json")).run()
    assert any("deep.json nests arrays or objects 50,000 levels deep; at most 32" in e.value for e in at.error)
    at.file_uploader(key="ab_upload").set_value(("big.csv", b"question\n" + b"x" * (6 << 20), "text/csv")).run()
    assert any("big.csv is 6.0 MB" in e.value and "the limit is 5.0 MB" in e.value for e in at.error)
    # an over-long name is refused with the numbers, and kept in the box
    at.text_input(key="ab_name").set_value("n" * 250).run()
    assert any("The name is 250 characters; at most 200 characters are allowed" in e.value for e in at.error)
    assert at.text_input(key="ab_name").value == "n" * 250
    at.button(key="ab_save").click().run()
    assert any("name is 250 characters; at most 200" in e.value for e in at.error)
    assert not at.exception
    # the limits are stated on the page
    assert "Uploads: UTF-8 text, 5.0 MB" in texts(at)
    assert at.text_area(key="ab_tpl_0").help.startswith("at most 20,000 characters")


def test_page_refuses_an_unsupported_regex_check(monkeypatch, tmp_path):
    """The checks table is a data editor (not settable in AppTest): its rows come from the session."""
    from tests.conftest import app_test

    monkeypatch.setenv("PLAYGROUND_DATA", str(tmp_path))
    at = app_test(None, timeout=120)
    at.session_state["ab_checks"] = [{"kind": "regex", "value": r"(\w+) \1", "min": None, "max": None,
                                      "unit": "characters"}]
    at.switch_page("views/prompt_ab.py").run()
    assert not at.exception
    assert any("Check 1: The regex check /(\\w+) \\1/ uses backreferences" in w.value for w in at.warning)
    at.button(key="ab_run").click().run()
    assert any("Fix the check(s) first" in e.value for e in at.error)
    assert not at.exception
