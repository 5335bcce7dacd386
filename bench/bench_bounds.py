"""What the bounds on a person's input cost, against the same work unbounded, in one run.

- render: one row through each template format with the bounds (a traced deadline, jinja2 in
  `BoundedSandbox`) vs the same template unbounded (LangChain's formatter, no trace): the price
  every rendered cell pays;
- regex: a check's pattern on a model-sized output with RE2 vs Python's `re` (the baseline);
  and the catastrophic case `(a+)+$` on `"a" * N + "b"`, where `re`'s time doubles with each
  `a` (measured at small N only) and RE2's does not;
- runaway: how long a jinja2 template with nested empty loops runs before it is stopped, and the
  worst latency of another thread doing small real requests meanwhile (vs its idle latency).

Prints medians of --repeat interleaved runs.

Run: .venv/bin/python bench/bench_bounds.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playground.experiments import Check  # noqa: E402
from playground.limits import TimeLimitError  # noqa: E402
from playground.prompts import PromptVariant  # noqa: E402

ROW = {"question": "What is the capital of France? " * 4, "tone": "terse"}
TEMPLATES = [
    PromptVariant("f", "Answer in one word.\nQuestion: {question}", system="You are {tone}."),
    PromptVariant("m", "Q: {{{question}}}\nA:", system="You are {{tone}}.", format="mustache"),
    PromptVariant("j", "{% for w in question.split()[:8] %}{{ w|upper }} {% endfor %}\n{{ question }}",
                  system="You are {{ tone }}.", format="jinja2"),
]
OUTPUT = ("The capital of France is Paris. " * 20).strip()


def timed(fn, n: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def unbounded(v: PromptVariant):
    return lambda: v.chat_template.format_messages(**{k: ROW[k] for k in v.variables})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")

    print("\nrender one row (ms): bounded vs unbounded (LangChain, untraced)")
    for v in TEMPLATES:
        v.render({k: ROW[k] for k in v.variables})  # warm: parse, compile, imports
        unbounded(v)()
        b, u = [], []
        for _ in range(args.repeat):
            b.append(timed(lambda: v.render({k: ROW[k] for k in v.variables}), 200))
            u.append(timed(unbounded(v), 200))
        mb, mu = statistics.median(b) * 1e3, statistics.median(u) * 1e3
        print(f"  {v.format:9s} bounded {mb:7.3f}  unbounded {mu:7.3f}  ratio {mb / mu:5.2f}")

    print("\nregex check on a 640-character output (µs): RE2 vs re")
    for pattern in (r"\bParis\b", r"^The .* Paris\.$", r"(?i)capital\s+of\s+\w+"):
        c, py = Check("regex", pattern).validate(), re.compile(pattern)
        r2s, res = [], []
        for _ in range(args.repeat):
            r2s.append(timed(lambda: c(OUTPUT), 2000))
            res.append(timed(lambda: py.search(OUTPUT), 2000))
        m2, mr = statistics.median(r2s) * 1e6, statistics.median(res) * 1e6
        print(f"  /{pattern}/  RE2 {m2:6.2f}  re {mr:6.2f}  ratio {m2 / mr:5.2f}")
    evil = Check("regex", r"(a+)+$").validate()
    py = re.compile(r"(a+)+$")
    for n in (16, 18, 20, 22):
        t_re = timed(lambda: py.search("a" * n + "b"))
        t_r2 = timed(lambda: evil("a" * n + "b"))
        print(f"  (a+)+$ on a*{n}+b: re {t_re * 1e3:9.2f} ms   RE2 {t_r2 * 1e3:6.3f} ms")
    t_r2 = timed(lambda: evil("a" * 100_000 + "b"))
    print(f"  (a+)+$ on a*100000+b: RE2 {t_r2 * 1e3:.3f} ms (re: about 2^100000 steps)")

    print("\nrunaway jinja2 (nested empty loops) while another thread serves small requests")
    stop, lat = threading.Event(), []

    def other() -> None:
        v = TEMPLATES[0]
        while not stop.is_set():
            t = time.perf_counter()
            v.render({k: ROW[k] for k in v.variables})
            lat.append(time.perf_counter() - t)
            time.sleep(0.005)

    w = threading.Thread(target=other, daemon=True)
    w.start()
    time.sleep(1.0)
    idle = list(lat)
    runaway = PromptVariant("r", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ q }}",
                            format="jinja2")
    n0 = len(lat)
    t = time.perf_counter()
    try:
        runaway.render({"q": "x"})
    except TimeLimitError:
        pass
    stopped = time.perf_counter() - t
    during = lat[n0:]
    stop.set()
    w.join()
    print(f"  stopped after {stopped:.2f} s; other thread: {len(during)} requests meanwhile, "
          f"worst {max(during) * 1e3:.1f} ms, median {statistics.median(during) * 1e3:.2f} ms "
          f"(idle: worst {max(idle) * 1e3:.1f} ms, median {statistics.median(idle) * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()
