"""The experiments store on PostgreSQL as on SQLite: a real run on SmolLM2 saved, voted, judged,
reopened, forked, listed, exported and deleted on both engines; two processes on one database
(an experiment saved by one opens in the other, votes cast by both at the same moment are all
counted); databases written by the previous schema upgraded in place; saved RAG setups in the
shared database; the database password never in a message.

A session fixture starts a PostgreSQL cluster of its own (Debian's /usr/lib/postgresql/<v>/bin)
as an unprivileged user on a free loopback port, with password authentication, and stops it at
the end. Each test gets a database of its own.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from playground import experiments as ex
from playground.database import MIGRATIONS, VERSION, Database
from playground.errors import InputError, PlaygroundError
from playground.experiments import Arm, Check, Experiment, ExperimentStore, InputRow, RunSettings
from playground.generate import GenerationSettings, generate
from playground.prompts import PromptVariant
from tests.appserver import free_port
from tests.test_experiments import ROWS, SMOL, TINY, VARIANTS, ScriptedJudge

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_USER = "playground-pg"  # the system user that runs the server (root cannot)
DB_USER, DB_PASSWORD = "playground", "pg-s3cret-Xy7"
BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
NO_PG = "PostgreSQL is not installed (scripts/setup.sh --dev installs Debian's postgresql package)"


def _as_user(args, **kw):
    if os.geteuid() == 0:
        args = ["runuser", "-u", PG_USER, "--", *args]
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


@pytest.fixture(scope="session")
def pg_server():
    """(host, port) of a PostgreSQL cluster of this test run, with user `playground` and a password."""
    if not BINS:
        pytest.skip(NO_PG)
    bindir = os.path.dirname(BINS[-1])
    if os.geteuid() == 0 and subprocess.run(["id", PG_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                       check=True, capture_output=True)
    folder = tempfile.mkdtemp(prefix="playground-pg-")  # under /tmp, reachable by the server's user
    data, pwfile = os.path.join(folder, "data"), os.path.join(folder, "pw")
    with open(pwfile, "w") as fh:
        fh.write(DB_PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(folder, PG_USER)
        shutil.chown(pwfile, PG_USER)
    _as_user([f"{bindir}/initdb", "-D", data, "-U", DB_USER, "--pwfile", pwfile, "--auth", "scram-sha-256",
              "-E", "UTF8", "--locale", "C"])
    port = free_port()
    opts = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
    _as_user([f"{bindir}/pg_ctl", "-D", data, "-o", opts, "-l", os.path.join(folder, "log"), "-w", "start"])
    try:
        yield "127.0.0.1", port
    finally:
        _as_user([f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"])
        shutil.rmtree(folder, ignore_errors=True)


def _url(server, db="postgres", password=DB_PASSWORD):
    host, port = server
    return f"postgresql://{DB_USER}:{password}@{host}:{port}/{db}"


@pytest.fixture
def pg_url(pg_server):
    """A new, empty database of this test's own."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(_url(pg_server), autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return _url(pg_server, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def place(request, tmp_path):
    """Where a store lives: {"path": ...} or {"url": ...}; ExperimentStore(**place) opens it."""
    if request.param == "sqlite":
        return {"path": tmp_path / "experiments.sqlite3"}
    return {"url": request.getfixturevalue("pg_url")}


# --- the experiments suite on both engines --------------------------------------------------------

def test_a_real_run_saved_voted_judged_reopened_forked_and_deleted(place, smollm2):
    store = ExperimentStore(**place)
    exp = Experiment("capitals", VARIANTS, ROWS, TINY, checks=(Check("length", hi=200), Check("not contains", "as an ai")))
    report = ex.run(exp, store, lambda m: smollm2)
    assert (report.generated, report.failed) == (6, 0)
    x, y = exp.arms
    for row in range(3):
        a, b = ex.shown_pair(exp, row, x, y, blind=True)
        ex.vote(exp, row, a, b, ["A", "B", "tie"][row], blind=True, store=store)
    ex.run_judge(exp, ScriptedJudge(["1", "2", "1", "1", "2", "1"]), "scripted", store=store)

    reopened = ExperimentStore(**place).load(exp.id)  # a new store object: as after a restart
    assert (reopened.name, reopened.variants, reopened.rows, reopened.settings, reopened.checks) == \
           (exp.name, VARIANTS, ROWS, TINY, exp.checks)
    assert reopened.created == exp.created and reopened.updated >= exp.created  # Unix times kept to the microsecond
    for key, cell in exp.cells.items():
        again = reopened.cells[key]
        assert (again.output, again.prompt, again.system, again.user, again.checks, again.new_tokens, again.seconds) == \
               (cell.output, cell.prompt, cell.system, cell.user, cell.checks, cell.new_tokens, cell.seconds)
    assert [(v.row, v.a, v.b, v.choice) for v in reopened.votes.values()] == \
           [(v.row, v.a, v.b, v.choice) for v in exp.votes.values()]
    assert [(v.row, v.first, v.second, v.winner) for v in reopened.verdicts.values()] == \
           [(v.row, v.first, v.second, v.winner) for v in exp.verdicts.values()]
    assert ex.summarize(reopened) == ex.summarize(exp)
    assert len(json.loads(ex.to_json(reopened))["cells"]) == 6

    # voting again on a row replaces that vote (one per row and pair), on both engines
    a, b = ex.shown_pair(exp, 0, x, y, blind=True)
    ex.vote(exp, 0, a, b, "both bad", blind=True, store=store)
    assert store.load(exp.id).votes[(0, ex.pair_key(x, y), "")].choice == "both bad"
    assert len(store.load(exp.id).votes) == 3

    # a fork reruns only the edited template, the parent stands
    edited = (VARIANTS[0], PromptVariant("B", "{{question}} Answer with one word.", system="You are {{tone}}.",
                                         format="mustache"))
    child, action, reused = ex.prepare(store, exp, name="capitals v2", variants=edited, rows=ROWS, settings=TINY,
                                       checks=exp.checks, rubric=exp.rubric)
    assert action == "rerun" and reused == 3
    ex.run(child, store, lambda m: smollm2)
    infos = {i.id: i for i in ExperimentStore(**place).list()}
    assert (infos[exp.id].cells, infos[exp.id].votes, infos[exp.id].verdicts) == (6, 3, 3)
    assert infos[child.id].parent_id == exp.id and infos[child.id].cells == 6
    assert [i.id for i in store.list()][0] == child.id  # most recently changed first

    store.delete(exp.id)
    assert not store.exists(exp.id) and store.exists(child.id)
    with pytest.raises(InputError, match="no saved experiment"):
        store.load(exp.id)
    with pytest.raises(InputError, match="press Save"):  # a vote on a deleted experiment says what to do
        store.save_vote(exp.id, next(iter(exp.votes.values())), ex.pair_key(x, y))


def test_a_model_that_fails_halfway_keeps_the_finished_cells(place, smollm2):
    store = ExperimentStore(**place)
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
    assert "The 2 finished cell(s) are saved; 2 remain" in str(err.value)
    saved = ExperimentStore(**place).load(exp.id)
    assert {k: c.ok for k, c in saved.cells.items()} == {
        (0, "A", SMOL): True, (0, "B", SMOL): True, (1, "A", SMOL): False, (1, "B", SMOL): False}
    assert "8,192" in saved.cells[(1, "A", SMOL)].error
    report = ex.run(saved, store, lambda m: smollm2)  # running again fills in only what is missing
    assert (report.generated, report.failed, report.skipped) == (2, 2, 2)
    assert sorted(k for k, c in store.load(exp.id).cells.items() if c.ok) == [
        (0, "A", SMOL), (0, "B", SMOL), (2, "A", SMOL), (2, "B", SMOL)]
    assert {i.id: i.cells for i in store.list()}[exp.id] == 4  # the list counts only cells with an output


def test_the_prompt_ab_page_end_to_end_on_postgresql(pg_url, tmp_path, monkeypatch):
    """The page's own end-to-end test (run, vote, save, reopen from a link, rerun, open from the
    list) with DATABASE_URL set: every experiment lands in PostgreSQL, none in the data folder."""
    from tests import test_experiments

    monkeypatch.setenv("PLAYGROUND_DATA", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", pg_url)
    test_experiments.test_page_end_to_end_run_vote_save_reopen_rerun(tmp_path)
    infos = ExperimentStore(url=pg_url).list()
    assert sorted(i.name for i in infos) == ["page e2e (saved)", "page e2e (saved)"]  # the first and its rerun
    assert [i.votes for i in infos if i.parent_id is None] == [1]
    assert not (tmp_path / "experiments.sqlite3").exists()


# --- two processes on one database --------------------------------------------------------------

CHILD = r"""
import sys, time, json
sys.path.insert(0, {root!r})
from playground import experiments as ex
from playground.experiments import ExperimentStore
store = ExperimentStore()  # from DATABASE_URL, as the app does
exp = store.load({exp_id!r})
x, y = exp.arms
while time.time() < {start}:
    time.sleep(0.001)
for row in range(len(exp.rows)):  # the same rows as the other process, at the same moment
    ex.vote(exp, row, x, y, {choice!r}, False, store, voter={voter!r})
print(json.dumps(len(exp.cells)))
"""


def _experiment_with_cells(n_rows: int) -> Experiment:
    from playground.experiments.model import Cell

    rows = tuple(InputRow({"question": f"q{i}", "tone": "terse"}) for i in range(n_rows))
    exp = Experiment("shared", VARIANTS, rows, RunSettings((SMOL,), GenerationSettings(max_new_tokens=4)))
    for i in range(n_rows):
        for v in VARIANTS:
            exp.cells[(i, v.name, SMOL)] = Cell(row=i, variant=v.name, model_id=SMOL, output=f"{v.name}{i}", system=None,
                                                user=f"q{i}", prompt=f"q{i}", new_tokens=1, prompt_tokens=2, seconds=0.1,
                                                first_token_seconds=0.05, finish_reason="stop", error=None, checks=(),
                                                created=time.time())
    return exp


def test_two_processes_share_experiments_and_every_vote_counts(pg_url):
    exp = _experiment_with_cells(40)
    ExperimentStore(url=pg_url).create(exp)  # saved by this process ...
    env = dict(os.environ, DATABASE_URL=pg_url, OMP_WAIT_POLICY="PASSIVE")
    start = time.time() + 3.0  # both children vote at this moment, on the same 40 rows
    procs = [subprocess.Popen([sys.executable, "-c", CHILD.format(root=ROOT, exp_id=exp.id, start=start, voter=voter,
                                                                   choice=choice)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for voter, choice in (("ann", "A"), ("bob", "B"))]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert [json.loads(o[0]) for o in outs] == [80, 80]  # ... opens, with its cells, in two others
    reopened = ExperimentStore(url=pg_url).load(exp.id)
    assert len(reopened.votes) == 80  # every vote counted: two per row
    x, y = reopened.arms
    for row in range(40):
        assert (ex.vote_for(reopened, row, x, y, "ann").choice, ex.vote_for(reopened, row, x, y, "bob").choice) == ("A", "B")
    rates = {s.arm: s for s in ex.summarize(reopened)}
    assert (rates[x].human.wins, rates[x].human.losses, rates[y].human.wins, rates[y].human.n) == (40, 40, 40, 80)


def test_concurrent_votes_from_threads_on_both_engines(place):
    from concurrent.futures import ThreadPoolExecutor

    from playground.experiments.model import Vote

    exp = _experiment_with_cells(30)
    ExperimentStore(**place).create(exp)
    x, y = exp.arms
    stores = [ExperimentStore(**place) for _ in range(3)]  # three "processes'" stores

    def cast(i):  # 3 voters x 30 rows, and each voter's first vote on a row cast twice (the second replaces it)
        row, voter = i % 30, f"v{i // 30 % 3}"
        choice = "tie" if i < 90 else "A"
        stores[i % 3].save_vote(exp.id, Vote(row, x, y, choice, False, time.time(), voter), ex.pair_key(x, y))

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(cast, range(90)))
        list(pool.map(cast, range(90, 120)))  # voter v0 again on every row
    votes = ExperimentStore(**place).load(exp.id).votes
    assert len(votes) == 90 and sorted({r for r, *_ in votes}) == list(range(30))
    assert sorted(v.choice for (_, _, voter), v in votes.items() if voter == "v0") == ["A"] * 30
    assert {v.choice for (_, _, voter), v in votes.items() if voter != "v0"} == {"tie"}


# --- migrations -----------------------------------------------------------------------------------

# The experiments tables exactly as the previous version of the app created them (no schema_version).
OLD_SCHEMA = """
CREATE TABLE experiments (id TEXT PRIMARY KEY, name TEXT NOT NULL, parent_id TEXT, created REAL NOT NULL,
    updated REAL NOT NULL, variants TEXT NOT NULL, rows TEXT NOT NULL, settings TEXT NOT NULL, checks TEXT NOT NULL,
    rubric TEXT NOT NULL);
CREATE TABLE cells (experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    row INTEGER NOT NULL, variant TEXT NOT NULL, model_id TEXT NOT NULL, output TEXT NOT NULL, system TEXT,
    user TEXT NOT NULL, prompt TEXT NOT NULL, new_tokens INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
    seconds REAL NOT NULL, first_token_seconds REAL NOT NULL, finish_reason TEXT NOT NULL, error TEXT,
    checks TEXT NOT NULL, exact REAL, f1 REAL, cosine REAL, created REAL NOT NULL,
    PRIMARY KEY (experiment_id, row, variant, model_id));
CREATE TABLE votes (experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    row INTEGER NOT NULL, pair TEXT NOT NULL, a_variant TEXT NOT NULL, a_model TEXT NOT NULL,
    b_variant TEXT NOT NULL, b_model TEXT NOT NULL, choice TEXT NOT NULL, blind INTEGER NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (experiment_id, row, pair));
CREATE TABLE verdicts (experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    row INTEGER NOT NULL, pair TEXT NOT NULL, judge_model TEXT NOT NULL, x_variant TEXT NOT NULL,
    x_model TEXT NOT NULL, y_variant TEXT NOT NULL, y_model TEXT NOT NULL, first_choice TEXT NOT NULL,
    first_reason TEXT NOT NULL, first_text TEXT NOT NULL, second_choice TEXT NOT NULL, second_reason TEXT NOT NULL,
    second_text TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (experiment_id, row, pair, judge_model));
"""
OLD_ROWS = [
    "INSERT INTO experiments VALUES ('e1', 'old one', NULL, 1700000000.5, 1700000100.25,"
    " '[{\"name\": \"A\", \"template\": \"Say {x}\", \"system\": \"\", \"format\": \"f-string\"}]',"
    " '[{\"values\": {\"x\": \"hi\"}, \"reference\": \"hi\"}]',"
    " '{\"model_ids\": [\"smollm2-135m-instruct\"], \"generation\": {}}', '[]', 'Which is better?')",
    "INSERT INTO cells VALUES ('e1', 0, 'A', 'smollm2-135m-instruct', 'hi there', NULL, 'Say hi', 'Say hi', 2, 3,"
    " 0.5, 0.1, 'stop', NULL, '[]', 0.0, 0.5, NULL, 1700000050.0)",
    "INSERT INTO votes VALUES ('e1', 0, 'A@smollm2-135m-instruct|A@smollm2-135m-instruct', 'A',"
    " 'smollm2-135m-instruct', 'A', 'smollm2-135m-instruct', 'tie', 1, 1700000060.0)",
]


def _write_old(place):
    if "path" in place:
        con = sqlite3.connect(place["path"])
        con.executescript(OLD_SCHEMA)
        for stmt in OLD_ROWS:
            con.execute(stmt)
        con.commit()
        con.close()
    else:
        import psycopg

        # No earlier version ran on PostgreSQL: a version-1 database there is what migration 1 builds
        # (the same tables, "user" quoted, DOUBLE PRECISION times), with no schema_version table.
        with psycopg.connect(place["url"], autocommit=True) as con:
            for stmt in MIGRATIONS[0].split(";"):
                if stmt.strip():
                    con.execute(stmt)
            for stmt in OLD_ROWS:
                con.execute(stmt)


def test_a_database_of_the_previous_schema_is_upgraded_in_place(place):
    _write_old(place)
    store = ExperimentStore(**place)
    assert store.db.version() == VERSION == len(MIGRATIONS)
    old = store.load("e1")  # nothing lost
    assert (old.name, old.created, old.updated, old.rubric) == ("old one", 1700000000.5, 1700000100.25, "Which is better?")
    assert old.variants[0].template == "Say {x}" and old.rows[0].reference == "hi"
    cell = old.cells[(0, "A", SMOL)]
    assert (cell.output, cell.user, cell.f1, cell.cosine) == ("hi there", "Say hi", 0.5, None)
    assert [(v.choice, v.voter) for v in old.votes.values()] == [("tie", "")]  # the vote cast before voters
    arm = Arm("A", SMOL)
    store.save_vote("e1", ex.model.Vote(0, arm, arm, "A", True, 1700000070.0, "s1"), f"{arm.key}|{arm.key}")
    assert sorted((v.voter, v.choice) for v in store.load("e1").votes.values()) == [("", "tie"), ("s1", "A")]
    # the upgraded database takes new writes of every kind, and opening it again changes nothing
    exp = _experiment_with_cells(2)
    store.create(exp)
    again = ExperimentStore(**place)
    assert again.db.version() == VERSION and {i.id for i in again.list()} == {"e1", exp.id}
    with again.db.connect() as con:
        versions = [r["version"] for r in con.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, VERSION + 1))  # version 1 recorded as found, then each step once


def test_a_new_database_is_built_by_the_migrations(place):
    store = ExperimentStore(**place)
    assert store.db.version() == VERSION and store.list() == []


# --- saved RAG setups in the shared database ------------------------------------------------------

def test_saved_rag_setups_live_in_the_shared_database(pg_url, tmp_path, monkeypatch):
    from playground.rag import setups
    from playground.rag.pipeline import Setup

    monkeypatch.setenv("PLAYGROUND_DATA", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", pg_url)
    setup = Setup(max_new_tokens=64)
    setups.save("team setup", setup)
    with pytest.raises(PlaygroundError, match="already saved"):
        setups.save("team setup", setup)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); from playground.rag import setups; "
            "print(setups.names(), setups.load('team setup').setup == setups.load('team setup').setup)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['team setup'] True"  # another process sees it
    assert not (tmp_path / "rag_setups.sqlite").exists()  # nothing in this process's folder
    assert setups.where().startswith("the shared database postgresql://***@127.0.0.1:") and DB_PASSWORD not in setups.where()
    setups.delete("team setup")
    assert setups.names() == []


ADD_ENDPOINTS = r"""
import sys, time
sys.path.insert(0, {root!r})
from playground import endpoints
while time.time() < {start}:
    time.sleep(0.001)
for i in range(10):
    endpoints.add_endpoint(f"{prefix}{{i}}", f"http://127.0.0.1:{{9000 + i}}", timeout=30)
"""


def test_endpoints_added_by_two_processes_at_once_are_all_kept_in_the_shared_database(pg_url, tmp_path, monkeypatch):
    from playground import endpoints
    from playground.errors import EndpointConfigError

    monkeypatch.setenv("PLAYGROUND_DATA", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", pg_url)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    start = time.time() + 2.5
    procs = [subprocess.Popen([sys.executable, "-c", ADD_ENDPOINTS.format(root=ROOT, start=start, prefix=p)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in ("a", "b")]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    names = [e.name for e in endpoints.list_endpoints()]
    assert sorted(names) == sorted([f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)])
    assert [n for n in names if n[0] == "a"] == [f"a{i}" for i in range(10)]  # in the order each added them
    assert endpoints.get_endpoint("b3").url == "http://127.0.0.1:9003/v1"
    with pytest.raises(EndpointConfigError, match="exists already"):
        endpoints.add_endpoint("a1", "http://127.0.0.1:1")
    assert endpoints.update_endpoint("a1", timeout=5).timeout == 5 and endpoints.get_endpoint("a1").timeout == 5
    assert endpoints.remove_endpoint("a1") and not endpoints.remove_endpoint("a1")
    assert len(endpoints.list_endpoints()) == 19
    assert not (tmp_path / endpoints.STORE_NAME).exists()  # nothing in this process's folder


# --- the password stays out of messages -----------------------------------------------------------

def test_a_wrong_password_or_a_dead_server_is_reported_without_the_password(pg_server):
    wrong = _url(pg_server, password="wr0ng-Pa55word")
    with pytest.raises(PlaygroundError) as err:
        ExperimentStore(url=wrong)
    text = str(err.value)
    assert "wr0ng-Pa55word" not in text and "cannot be opened" in text and "DATABASE_URL" in text
    assert err.value.__cause__ is None and "wr0ng-Pa55word" not in repr(err.value.__context__ or "")
    port = free_port()
    with pytest.raises(PlaygroundError) as err:
        ExperimentStore(url=f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{port}/x")
    assert DB_PASSWORD not in str(err.value) and f"127.0.0.1:{port}" in str(err.value)


def test_a_url_that_is_not_postgresql_is_refused_with_what_to_do():
    with pytest.raises(InputError) as err:
        Database(url="mysql://root:hunter22@db/x")
    assert "hunter22" not in str(err.value) and "postgresql://" in str(err.value)


def test_the_backend_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert Database.from_env(default_path=tmp_path / "x.sqlite3").kind == "sqlite"
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@127.0.0.1:1/x")
    db = Database.from_env()
    assert db.kind == "postgresql" and db.where == "postgresql://***@127.0.0.1:1/x"


@pytest.mark.browser
def test_two_app_processes_on_one_database_in_chromium(pg_url, browser, tmp_path):
    """Two `streamlit run` servers, each with a data folder of its own, share only DATABASE_URL: an
    experiment run and saved in one opens in the other by its link, and votes cast in both at the
    same moment are all counted."""
    from urllib.parse import parse_qs, urlparse

    from tests.conftest import App, screenshot, wait_idle

    apps = [App(f"streamlit-postgres-{n}.log", {"DATABASE_URL": pg_url, "PLAYGROUND_DATA": str(tmp_path / f"data{n}")})
            for n in (1, 2)]
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in apps]
    try:
        one, two = (c.new_page() for c in contexts)
        one.goto(f"{apps[0].url}/prompt_ab", timeout=120_000)
        one.get_by_text("Press Run to fill the grid").wait_for(timeout=240_000)
        wait_idle(one)
        slider = one.locator('[data-testid="stSlider"]').filter(has_text="Max new tokens").locator('input[type="range"]')
        slider.focus()
        slider.press("Home")  # 1 new token: the run is about the database, not the text
        one.wait_for_function("() => [...document.querySelectorAll('input[type=range]')].some(e => e.value === '1')")
        wait_idle(one)
        one.get_by_role("button", name="Run", exact=True).click()
        one.get_by_text("6 outputs saved").wait_for(timeout=420_000)
        wait_idle(one)
        exp_id = parse_qs(urlparse(one.url).query)["exp"][0]
        saved = ExperimentStore(url=pg_url).load(exp_id)
        assert len(saved.cells) == 6

        two.goto(f"{apps[1].url}/prompt_ab?exp={exp_id}", timeout=120_000)  # the other process, by the link
        two.get_by_text("6 outputs saved").wait_for(timeout=240_000)
        wait_idle(two)
        for p in (one, two):
            p.get_by_role("tab", name="Vote").click()
        a_better, b_better = one.get_by_role("button", name="A is better"), two.get_by_role("button", name="B is better")
        a_better.wait_for(timeout=60_000)
        b_better.wait_for(timeout=60_000)
        a_better.click()  # both at once, one in each process
        b_better.click()
        for p in (one, two):
            p.get_by_text("Voted on 1 of 3 rows").wait_for(timeout=60_000)
        votes = list(ExperimentStore(url=pg_url).load(exp_id).votes.values())
        assert len(votes) == 2 and len({v.voter for v in votes}) == 2 and {v.row for v in votes} == {votes[0].row}
        assert sorted(v.choice for v in votes) == ["A", "B"]
        assert not list((tmp_path / "data1").glob("**/experiments.sqlite3"))  # nothing in the processes' folders
        screenshot(two, "postgres-second-process")
    finally:
        for c in contexts:
            c.close()
        for app in apps:
            app.stop()
