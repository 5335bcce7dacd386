"""One server, many sessions: the memory budget, the work queue, start-up, the status page.

The budget and the queue are tested on their own (real tensors, real generations on SmolLM2), then
through the pages with AppTest (two sessions sharing one budget; the status page), and in Chromium
against a fresh server of their own: several sessions opening pages at once (no import race), one
session waiting behind another in the queue, seeing its place and cancelling.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import urllib.request

import pytest
import torch

from playground import budget as B
from playground import jobs
from playground.errors import BudgetError, InputError, JobCancelled
from playground.generate import GenerationSettings, generate, stream
from tests.conftest import ARTIFACTS, ROOT, SCREENSHOTS, app_test, free_port, texts

GiB = 1 << 30


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


# --- the budget -----------------------------------------------------------------------------

def test_budget_drops_least_recently_used_other_sessions_first():
    b = B.Budget(100, clock=Clock())
    for owner in ("a", "b", "c"):
        b.put(owner, "maps", torch.zeros(30, dtype=torch.uint8), 30, "attention maps")
    b.get("a", "maps")  # a is now the most recently used: b is the oldest
    b.put("d", "maps", "D", 50, "attention maps")  # 10 free: drops b (40 free), then c (70 free)
    assert b.get("b", "maps") is None and b.get("c", "maps") is None
    assert b.get("a", "maps") is not None and b.get("d", "maps") == "D"
    assert b.used == 80
    assert b.dropped("b") == ["attention maps"] and b.dropped("c") == ["attention maps"]
    assert b.dropped("b") == [] and b.dropped("a") == []  # said once; a lost nothing


def test_budget_within_a_session_drops_its_least_recently_used_entry_and_never_the_asker_own():
    b = B.Budget(100, clock=Clock())
    b.put("a", "one", 1, 40, "maps one")
    b.put("a", "two", 2, 40, "maps two")
    b.get("a", "one")  # "two" is now a's least recently used entry
    b.put("z", "x", 3, 30, "logits")
    assert b.get("a", "two") is None and b.get("a", "one") == 1
    # a's own entries are never dropped for a: 40 + 30 of z's could go, but a keeps "one"
    with pytest.raises(BudgetError):
        b.put("a", "three", 4, 70, "maps three")
    assert b.get("a", "one") == 1


def test_budget_refusal_states_what_is_needed_and_what_is_free():
    b = B.Budget(4 * GiB, clock=Clock())
    b.put("me", "a", "mine", int(1.2 * GiB), "maps of model A")
    other = b.reserve("other", "a", int(1.4 * GiB), "maps")  # being computed: counted, never dropped
    b.put("idle", "a", "theirs", int(1.0 * GiB), "maps")
    with pytest.raises(BudgetError) as err:
        b.reserve("me", "b", int(2.1 * GiB), "these attention maps")
    msg = str(err.value)
    assert msg.startswith("These attention maps need 2.1 GiB; 1.4 GiB is free for them now"), msg
    assert "4.0 GiB" in msg and "1.2 GiB" in msg and B.ENV in msg
    assert b.get("idle", "a") == "theirs" and b.get("me", "a") == "mine"  # a refusal drops nothing
    with b.reserve("me", "b", int(1.4 * GiB), "these attention maps") as room:  # fits once idle's is dropped
        room.fill("new")
    assert b.get("idle", "a") is None and b.get("me", "b") == "new"
    other.__exit__(None, None, None)  # never filled (the work failed): the room comes back
    assert b.used == int(1.2 * GiB) + int(1.4 * GiB)


def test_budget_releases_sessions_that_are_gone():
    b = B.Budget(1000)
    for owner in ("alive", "closed", "reloaded"):
        b.put(owner, "maps", owner, 100, "maps")
    gone = b.release_gone(lambda owner: owner == "alive")
    assert sorted(gone) == ["closed", "reloaded"]
    assert b.used == 100 and b.owners() == ["alive"]
    assert b.snapshot().by("owner") == {"alive": 100}


def test_budget_size_from_the_environment():
    assert B.parse_size("1.5GiB") == 3 * GiB // 2 and B.parse_size("800MB") == 800_000_000
    assert B.parse_size("25%") == pytest.approx(B.machine_bytes() / 4, rel=1e-6)
    assert B.configured_bytes({}) == B.default_bytes() == int(B.machine_bytes() * 0.25)
    for bad in ("lots", "12 parsecs", "1KB"):
        with pytest.raises(InputError) as err:
            B.configured_bytes({B.ENV: bad})
        assert B.ENV in str(err.value) and bad in str(err.value)


def test_logits_cache_grows_within_the_budget(smollm2):
    from playground.stepping import LogitsCache

    V = smollm2.model.config.vocab_size
    b = B.Budget(5 * V * 4 + 100)  # room for five distributions
    cache = LogitsCache(max_entries=48, admit=lambda n: b.resize("s", "cache", n))
    b.put("s", "cache", cache, 0, "next-token logits")
    ids = smollm2.tokenizer("The sea is")["input_ids"]
    for k in range(7):
        d = cache.get(smollm2, ids + [k])
        assert d.logits.shape == (V,)
    assert len(cache) == 5 and b.used == 5 * V * 4  # the sixth and seventh were given, not kept
    assert torch.equal(cache.get(smollm2, ids + [6]).logits, d.logits)  # recomputed: the same logits


# --- the queue ------------------------------------------------------------------------------

@pytest.fixture
def bound_one():
    before = jobs.QUEUE.bound
    jobs.QUEUE.bound = 1
    yield jobs.QUEUE
    jobs.QUEUE.bound = before


def _wait_until(pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_queue_runs_in_arrival_order_within_the_bound_and_reports_places(smollm2, bound_one):
    settings = GenerationSettings(max_new_tokens=6)
    want = generate(smollm2, "Name a colour.", settings).text
    prompts = ["Name a colour.", "Name a fruit.", "Name a city.", "Name an animal."]
    streams = [stream(smollm2, p, settings) for p in prompts]
    seen: dict[int, list[int]] = {s.ticket.id: [] for s in streams}
    most = [0]
    started, finished = [], []
    lock = threading.Lock()

    def report(t):
        with lock:
            if t.state == "waiting" and t.id in seen:
                seen[t.id].append(t.ahead)
            most[0] = max(most[0], len(jobs.QUEUE.snapshot()[0]))

    def run(i):
        for _ in streams[i]:
            pass
        with lock:
            finished.append(i)

    threads = []
    old = jobs._reporter
    jobs.set_reporter(report)  # the test's own waiting callback (the app installs one that draws)
    try:
        for i, s in enumerate(streams):  # one after another into the queue: the arrival order is known
            threads.append(threading.Thread(target=run, args=(i,)))
            threads[-1].start()
            _wait_until(lambda: s.ticket.state in ("waiting", "running", "done"))
        for t in threads:
            t.join(120)
    finally:
        jobs.set_reporter(old)
    order = sorted(range(4), key=lambda i: streams[i].ticket.started)
    assert order == [0, 1, 2, 3] and finished == [0, 1, 2, 3]
    assert most[0] <= 1  # never more than the bound running
    for i, s in enumerate(streams[1:], start=1):  # each waiting one saw its place, counting down to 0
        places = seen[s.ticket.id]
        assert places and places[0] == i - 1 and places[-1] == 0 and places == sorted(places, reverse=True), places
    assert streams[0].result.text == want and all(s.result.finish_reason for s in streams)
    assert jobs.QUEUE.snapshot() == ((), ())


def test_a_cancelled_request_leaves_the_queue(smollm2, bound_one):
    long = stream(smollm2, "Tell me a long story about the sea.", GenerationSettings(max_new_tokens=40))
    waiting = stream(smollm2, "Name a colour.", GenerationSettings(max_new_tokens=4))
    after = stream(smollm2, "Name a fruit.", GenerationSettings(max_new_tokens=4))
    errors: dict[str, BaseException] = {}

    def run(name, s):
        try:
            for _ in s:
                pass
        except BaseException as exc:  # noqa: BLE001
            errors[name] = exc

    t1 = threading.Thread(target=run, args=("long", long))
    t1.start()
    _wait_until(lambda: long.ticket.state == "running")
    t2 = threading.Thread(target=run, args=("waiting", waiting))
    t2.start()
    _wait_until(lambda: waiting.ticket.state == "waiting")
    t3 = threading.Thread(target=run, args=("after", after))
    t3.start()
    _wait_until(lambda: after.ticket.state == "waiting" and after.ticket.ahead == 1)
    waiting.cancel()
    t2.join(10)
    assert isinstance(errors.get("waiting"), JobCancelled)
    assert waiting.ticket.state == "cancelled" and waiting.ticket not in jobs.QUEUE.snapshot()[1]
    assert after.ticket.ahead == 0  # it moved up
    for t in (t1, t3):
        t.join(120)
    assert "long" not in errors and "after" not in errors
    assert long.result.new_tokens > 0 and after.result.new_tokens > 0 and waiting.result is None


def test_remote_models_do_not_wait_and_a_turn_inside_a_turn_does_not_queue(smollm2):
    q = jobs.WorkQueue(1)

    class Remote:
        engine = "remote"

    holding = threading.Event()
    release = threading.Event()

    def hold():
        with jobs.turn(smollm2, "a long pass", queue=q):
            holding.set()
            release.wait(30)

    threading.Thread(target=hold).start()
    holding.wait(10)
    start = time.monotonic()
    with jobs.turn(Remote(), "a remote generation", queue=q) as t:
        assert t is None  # not queued behind the local pass
    assert time.monotonic() - start < 0.5 and len(q.snapshot()[0]) == 1
    release.set()
    with jobs.turn(smollm2, "outer", queue=q) as outer:
        with jobs.turn(smollm2, "inner", queue=q) as inner:  # would wait for itself with a bound of 1
            assert outer is not None and inner is None
    assert q.snapshot() == ((), ())
    assert jobs.configured_bound({}) == jobs.DEFAULT_BOUND
    with pytest.raises(InputError):
        jobs.configured_bound({jobs.ENV: "0"})


# --- pages (AppTest) ----------------------------------------------------------------------

def _attention(at, text: str):
    at.text_area(key="attention_text").set_value(text)
    at.run()
    return at


def test_two_sessions_share_one_budget_on_the_attention_page(smollm2):
    from playground import attention as attn

    budget = B.server_budget()
    before = budget.total
    budget.clear()
    mid, long = " ".join(["the cat sat on the mat"] * 6), " ".join(["the cat sat on the mat"] * 12)
    try:
        a = app_test("views/attention.py")  # the default text's maps (SmolLM2: about 25 tokens)
        assert not a.exception and "tokens ·" in texts(a)
        a_bytes = budget.snapshot().by("owner")
        assert len(a_bytes) == 1
        kept = next(iter(a_bytes.values()))
        need_mid, need_long = attn.kept_bytes(smollm2, mid), attn.kept_bytes(smollm2, long)
        budget.total = need_mid + kept // 2  # the middle text fits, but not beside a's maps; the long one never
        assert need_long > budget.total
        b = app_test("views/attention.py")
        _attention(b, long)
        err = " ".join(e.value for e in b.error)
        m = re.search(r"These attention maps need ([\d.,]+ [KMG]iB); ([\d.,]+ [KMG]iB) is free for them now", err)
        assert m, err
        assert m.group(2) == B.size(budget.total)  # a's maps could be dropped, so the whole budget is free to b
        assert not b.exception
        assert m.group(1) == B.size(need_long)
        _attention(b, mid)  # fits only if a's maps are dropped
        assert not b.error and "tokens ·" in texts(b)
        assert len(budget.snapshot().by("owner")) == 1  # a's were dropped for b
        a.run()  # a comes back: its maps are computed again (and b's go), no error
        assert not a.exception and not a.error and "tokens ·" in texts(a)
        assert any("dropped" in t.value for t in a.toast)
        assert budget.used <= budget.total
    finally:
        budget.total = before
        budget.clear()


def test_status_page_shows_sessions_queue_and_budget():
    at = app_test("views/status.py")
    assert not at.exception, at.exception
    shown = texts(at)
    assert "Server status" in shown and "Sessions alive" in shown and "Process memory (RSS)" in shown
    assert f"Memory kept (budget {B.size(B.server_budget().total)})" in shown
    assert f"Jobs running: 0 of {jobs.QUEUE.bound}" in shown
    table = {tuple(df.value.columns)[0]: df.value for df in at.dataframe}  # each table by its first column
    sessions = table["session"]
    assert (sessions["page"] == "status").any() and sessions["session"].str.contains("(you)", regex=False).any()
    before = B.server_budget().used
    a = app_test("views/attention.py")  # another session keeps maps: the status page counts them
    assert not a.exception
    at.run()
    entries = next(df.value for df in at.dataframe if "bytes" in df.value.columns)
    assert (entries["what"] == "these attention maps").any() and (entries["engine"] == "transformers").any()
    assert int(entries["bytes"].sum()) == B.server_budget().used > before


# --- a fresh server, several browsers ----------------------------------------------------

@pytest.fixture(scope="module")
def fresh_server():
    """A server of this module's own, started fresh (nothing imported yet), one model call at a time."""
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "streamlit-sessions.log"
    log = open(log_path, "w")
    env = {**os.environ, jobs.ENV: "1"}
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/streamlit"), "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.3)
    yield url, log_path
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
    log.close()


PAGES = {"": "LLM Playground", "tokens": "Tokenization", "next_token": "Next token", "lens": "Logit lens",
         "attention": "Attention", "compare": "Compare models", "status": "Server status"}


@pytest.mark.browser
def test_sessions_opening_pages_at_once_on_a_fresh_server(fresh_server, browser):
    url, log_path = fresh_server
    contexts = [browser.new_context(viewport={"width": 1300, "height": 900}) for _ in PAGES]
    pages = [c.new_page() for c in contexts]
    for page, path in zip(pages, PAGES):  # all at once: none waits for another to load
        page.goto(f"{url}/{path}", wait_until="commit")
    try:
        for page, (path, title) in zip(pages, PAGES.items()):
            page.get_by_role("heading", name=title).first.wait_for(timeout=240_000)
        # every page has run to its end (its slowest part: a model run on Next token / Lens / Attention)
        pages[list(PAGES).index("attention")].get_by_text("tokens ·", exact=False).first.wait_for(timeout=240_000)
        pages[list(PAGES).index("next_token")].get_by_role("heading", name="Temperatures side by side").wait_for(timeout=240_000)
        for page in pages:
            body = page.inner_text("body")
            assert "ImportError" not in body and "cannot import name" not in body and "Unexpected error" not in body, body[:800]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        status = pages[list(PAGES).index("status")]
        status.get_by_text("Sessions alive").first.wait_for(timeout=60_000)  # its metrics draw after the page's text
        alive = re.compile(r"Sessions alive\s+%d\b" % len(PAGES))
        _wait_until(lambda: alive.search(status.inner_text("body")), timeout=30)
        status.locator("[data-testid='stDataFrame']").first.wait_for(timeout=30_000)
        status.wait_for_timeout(1500)
        status.screenshot(path=str(SCREENSHOTS / "sessions-status.png"), full_page=True)
        log = log_path.read_text()
        assert "ImportError" not in log and "cannot import name" not in log, log[-3000:]
    finally:
        for c in contexts:
            c.close()


@pytest.mark.browser
def test_a_waiting_session_sees_its_place_and_can_cancel(fresh_server, browser):
    url, _ = fresh_server
    busy, waiter = (browser.new_context(viewport={"width": 1300, "height": 900}) for _ in range(2))
    try:
        p1 = busy.new_page()  # a long sweep on Next token holds the queue's one turn
        p1.goto(f"{url}/next_token?n_samples=16&n_tokens=64&temps=0.5,1.0,1.5,2.0", timeout=120_000)
        p1.get_by_role("button", name="Run the sweep").wait_for(timeout=240_000)
        p1.get_by_role("button", name="Run the sweep").click()
        p1.get_by_text(re.compile(r"Sampling \d+ continuations")).first.wait_for(timeout=60_000)
        p2 = waiter.new_page()  # its lens run queues behind the sweep
        p2.goto(f"{url}/lens?text=" + urllib.request.quote("A sentence nobody has read before, " * 3), timeout=120_000)
        wait = p2.get_by_text("ahead of you", exact=False).first
        wait.wait_for(timeout=60_000)
        assert re.search(r"Waiting: 0 ahead of you", p2.inner_text("body"))
        p2.screenshot(path=str(SCREENSHOTS / "sessions-waiting.png"), full_page=False)
        p2.get_by_role("button", name="Cancel").click()
        p2.get_by_text("You cancelled", exact=False).first.wait_for(timeout=60_000)
        assert "left the queue" in p2.inner_text("body")
        p2.screenshot(path=str(SCREENSHOTS / "sessions-cancelled.png"), full_page=False)
        p1.get_by_text(re.compile(r"\d+ samples in [\d.]+ s")).first.wait_for(timeout=300_000)  # the sweep finished
    finally:
        busy.close()
        waiter.close()


@pytest.mark.browser
def test_a_closed_tab_releases_what_it_kept(fresh_server, browser):
    url, _ = fresh_server
    tab, watcher = (browser.new_context(viewport={"width": 1300, "height": 900}) for _ in range(2))
    try:
        a = tab.new_page()
        a.goto(f"{url}/attention", timeout=120_000)
        a.get_by_text(re.compile(r"tokens · \d+ layers")).first.wait_for(timeout=240_000)
        status = watcher.new_page()
        status.goto(f"{url}/status", timeout=120_000)
        status.get_by_text("Sessions alive").first.wait_for(timeout=60_000)
        kept = re.compile(r"Memory kept \(budget [^)]*\)\s+(\S+ \S+)")
        _wait_until(lambda: kept.search(status.inner_text("body")).group(1) != "0 B", timeout=30)
        a.context.close()  # the tab goes: within the 5 s sweep (and the status page's 3 s redraw) its maps are released
        _wait_until(lambda: kept.search(status.inner_text("body")).group(1) == "0 B", timeout=30)
        assert re.search(r"Sessions alive\s+1\b", status.inner_text("body"))
    finally:
        watcher.close()
