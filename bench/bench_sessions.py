"""Many sessions on one server: the work queue's bound, Compare from many browsers, Attention memory.

1. `bound`: in one process, --jobs generations started at once (SmolLM2 fp32 greedy, --tokens new
   tokens each, through `playground.generate.stream` and so through the work queue) with the
   queue's bound at 1, 2 and 3 (and with no queue, "off": all at once), round-robin for --rounds
   rounds. Total throughput = all new tokens / wall time of the round; median over rounds. The
   ratio is against bound 1 measured in the same run. The same on llama.cpp with `--engine gguf`.
2. `compare`: a fresh `streamlit run app.py` server and --sessions headless-Chromium contexts on
   the Compare page (its default models), each pressing Compare: all at once, then one after
   another, in the same run. Per session: the time from the click to the last column's numbers;
   total: the wall time of all of them. Ratio: at once / one after another.
3. `attention`: the same server with PLAYGROUND_MEMORY_BUDGET=--budget, --sessions contexts that
   each put a long text (--attention-tokens tokens of SmolLM2) on the Attention page at once;
   the server's RSS is sampled every 0.2 s (the process and its children); reported: the RSS
   before any session, its peak, and the peak less the start against the budget; how many
   sessions got their maps, were refused with the numbers, or had theirs dropped for others.

Run: .venv/bin/python bench/bench_sessions.py [bound|compare|attention|all] [--short]
The figures are in docs/bench-sessions.md (measured on a shared, loaded 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tests.appserver import CHROMIUM, CHROMIUM_ARGS, App  # noqa: E402  (the tests start servers the same way)

PROMPT = "Write three sentences about the sea."


# --- 1. the bound ---------------------------------------------------------------------------

def bench_bound(args) -> dict:
    from playground import jobs
    from playground.generate import GenerationSettings, stream
    from playground.loading import load_causal_lm

    model_id = "smollm2-135m-instruct:gguf" if args.engine == "gguf" else "smollm2-135m-instruct"
    lm = load_causal_lm(model_id)
    settings = GenerationSettings(max_new_tokens=args.tokens)
    stream(lm, PROMPT, settings)  # warm-up (a first call allocates)
    for _ in stream(lm, PROMPT, settings):
        pass

    def one_round(bound: int | None) -> tuple[float, int, list[float]]:
        if bound is not None:
            jobs.QUEUE.bound = bound
        streams = [stream(lm, PROMPT, settings) for _ in range(args.jobs)]
        ends: list[float] = [0.0] * len(streams)
        start = time.perf_counter()

        def run(i: int) -> None:
            s = streams[i]
            if bound is None:  # no queue: the generation loop itself (playground.generate without the turn)
                for _ in s._generate():
                    pass
            else:
                for _ in s:
                    pass
            ends[i] = time.perf_counter() - start

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(streams))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        return wall, sum(s.result.new_tokens for s in streams), ends

    kinds: list[int | None] = [1, 2, 3, 4, None]
    walls: dict[str, list[float]] = {str(k or "off"): [] for k in kinds}
    toks: dict[str, list[float]] = {str(k or "off"): [] for k in kinds}
    p50: dict[str, list[float]] = {str(k or "off"): [] for k in kinds}
    for r in range(args.rounds):
        for k in kinds:
            wall, n, ends = one_round(k)
            walls[str(k or "off")].append(wall)
            toks[str(k or "off")].append(n / wall)
            p50[str(k or "off")].append(statistics.median(ends))
    jobs.QUEUE.bound = jobs.configured_bound()
    base = statistics.median(toks["1"])
    print(f"\n{args.jobs} generations at once, {args.tokens} new tokens each, {model_id}, {args.rounds} rounds, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'bound':>6} {'wall s':>8} {'tokens/s':>9} {'ratio':>6} {'p50 done s':>11}")
    out = {}
    for k, v in toks.items():
        med = statistics.median(v)
        out[k] = (statistics.median(walls[k]), med, med / base, statistics.median(p50[k]))
        print(f"{k:>6} {out[k][0]:8.2f} {med:9.2f} {med / base:6.2f} {out[k][3]:11.2f}")
    return out


# --- a server and browsers ------------------------------------------------------------------

def _browser():
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    return pw, pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def bench_compare(args) -> dict:
    server = App("bench-sessions-server.log", start_timeout=90)
    pw, browser = _browser()
    try:
        pages = []
        for _ in range(args.sessions):
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(server.url + f"/compare?max={args.tokens}", timeout=120_000)
            page.locator(".st-key-compare_run button").wait_for(timeout=180_000)
            pages.append(page)
        # one warm run (loads the models once for every session)
        _press_and_wait(pages[0], args)

        def at_once() -> tuple[float, list[float]]:
            start = time.perf_counter()
            for p in pages:
                p.locator(".st-key-compare_run button").click()
            for p in pages:
                _cleared(p, args)
            times = [0.0] * len(pages)
            pending = set(range(len(pages)))
            while pending:
                for i in list(pending):
                    if _done(pages[i], args):
                        times[i] = time.perf_counter() - start
                        pending.discard(i)
                time.sleep(0.2)
                if time.perf_counter() - start > 900:
                    raise SystemExit("Compare at once did not finish in 15 minutes")
            return time.perf_counter() - start, times

        def one_by_one() -> tuple[float, list[float]]:
            start = time.perf_counter()
            times = []
            for p in pages:
                t0 = time.perf_counter()
                _press_and_wait(p, args)
                times.append(time.perf_counter() - t0)
            return time.perf_counter() - start, times

        seq_total, seq = one_by_one()
        par_total, par = at_once()
    finally:
        browser.close()
        pw.stop()
        server.stop()
    print(f"\n{args.sessions} sessions x Compare (the page's default two models, {args.tokens} new tokens), load {os.getloadavg()[0]:.1f}")
    print(f"one after another: total {seq_total:.1f} s, per session p50 {statistics.median(seq):.1f} s, max {max(seq):.1f} s")
    print(f"all at once:       total {par_total:.1f} s, per session p50 {statistics.median(par):.1f} s, max {max(par):.1f} s")
    print(f"ratio at once / one after another (total): {par_total / seq_total:.2f}")
    return {"seq": (seq_total, statistics.median(seq), max(seq)), "par": (par_total, statistics.median(par), max(par))}


def _done(page, args) -> bool:
    """Every column shows its numbers (under each answer)."""
    return page.locator('[data-testid="stMain"]').get_by_text("Tokens generated:").count() >= args.columns


def _cleared(page, args) -> None:
    """After a click: wait until the last run's numbers are gone (the new run redrew the columns)."""
    deadline = time.time() + 15
    while _done(page, args) and time.time() < deadline:
        time.sleep(0.1)


def _press_and_wait(page, args) -> None:
    page.locator(".st-key-compare_run button").click()
    _cleared(page, args)
    deadline = time.time() + 600
    while not _done(page, args):
        if time.time() > deadline:
            raise SystemExit("a Compare did not finish in 10 minutes")
        time.sleep(0.2)


def bench_attention(args) -> dict:
    from playground import budget
    from playground.loading import load_causal_lm

    lm = load_causal_lm("smollm2-135m-instruct")
    words = ("the cat sat on the mat and looked at the sea while the wind blew over the hills " * 400).split()
    text = " ".join(words)
    ids = lm.tokenizer(text)["input_ids"][: args.attention_tokens]
    texts = [lm.tokenizer.decode(ids[i:] + ids[:i]) for i in range(args.sessions)]  # a different text each
    from playground import attention as attn

    need = attn.kept_bytes(lm, texts[0])  # at the precision the page keeps them in
    precision = "float32" if need >= lm.num_layers * lm.num_heads * len(ids) ** 2 * 4 else "float16"
    server = App("bench-sessions-server.log", {budget.ENV: args.budget}, start_timeout=90)
    pw, browser = _browser()
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(server.rss())
            time.sleep(0.2)

    try:
        warm = browser.new_context().new_page()
        warm.goto(server.url + "/attention", timeout=180_000)
        warm.get_by_text(re.compile(r"tokens · \d+ layers")).first.wait_for(timeout=300_000)
        warm.context.close()
        time.sleep(6)  # the closed tab's maps are released by the timer
        base = server.rss()
        threading.Thread(target=sample, daemon=True).start()
        pages = []
        for t in texts:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(server.url + "/attention", timeout=180_000)
            page.locator(".st-key-attention_text textarea").wait_for(timeout=180_000)
            pages.append((page, t))
        start = time.perf_counter()
        for page, t in pages:
            box = page.locator(".st-key-attention_text textarea")
            box.fill(t)
            box.press("Control+Enter")
        outcome = {"maps": 0, "refused": 0}
        pending = set(range(len(pages)))
        while pending and time.perf_counter() - start < 900:
            for i in list(pending):
                page = pages[i][0]
                body = page.inner_text("body")
                shown = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) tokens · \d+ layers", body)]
                if any(n > len(ids) // 2 for n in shown):  # the long text's maps (not the default text's)
                    outcome["maps"] += 1
                    pending.discard(i)
                elif "is free for them now" in body:
                    outcome["refused"] += 1
                    pending.discard(i)
            time.sleep(0.5)
        seconds = time.perf_counter() - start
        for page, _ in pages:
            page.context.close()
        closed = time.perf_counter()
        after: list[tuple[float, int]] = []
        while time.perf_counter() - closed < args.after:  # the release sweep runs every 5 s
            time.sleep(1.0)
            after.append((time.perf_counter() - closed, server.rss()))
        after_close = after[-1][1]
    finally:
        stop.set()
        browser.close()
        pw.stop()
        server.stop()
    peak = max(samples) if samples else 0
    total = budget.parse_size(args.budget)
    print(f"\n{args.sessions} sessions on Attention at once, {len(ids):,} tokens each (maps {budget.size(need)} each "
          f"in {precision}), budget {budget.size(total)}, load {os.getloadavg()[0]:.1f}")
    print(f"maps shown: {outcome['maps']}, refused with the numbers: {outcome['refused']}, "
          f"unfinished: {len(pending)}, in {seconds:.0f} s")
    print(f"RSS before: {budget.size(base)}, peak: {budget.size(peak)}, peak - before: {budget.size(peak - base)} "
          f"({(peak - base) / total:.2f} x the budget)")
    print("after the tabs closed: " + ", ".join(f"{t:.0f} s {budget.size(r)}" for t, r in after[::3]))
    return {"base": base, "peak": peak, "after": after_close, "need": need, **outcome}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="all", choices=["bound", "compare", "attention", "all"])
    ap.add_argument("--short", action="store_true", help="fewer rounds and sessions (a few minutes)")
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engine", choices=["transformers", "gguf"], default="transformers")
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--columns", type=int, default=2, help="columns of the Compare page (its default: two models)")
    ap.add_argument("--budget", default="2GiB")
    ap.add_argument("--attention-tokens", type=int, default=1200)
    ap.add_argument("--after", type=float, default=20.0, help="seconds of RSS samples after the tabs closed")
    args = ap.parse_args()
    if args.short:
        args.rounds, args.sessions, args.attention_tokens = min(args.rounds, 2), min(args.sessions, 4), 900
    (ROOT / "artifacts").mkdir(exist_ok=True)
    if args.what in ("bound", "all"):
        bench_bound(args)
    if args.what in ("compare", "all"):
        bench_compare(args)
    if args.what in ("attention", "all"):
        bench_attention(args)


if __name__ == "__main__":
    main()
