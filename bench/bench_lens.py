"""Time and peak memory of the logit lens over 256 tokens, against the plain forward pass of the same text.

For SmolLM2 135M Instruct (30 layers, 49,152-token vocabulary) and Gemma 3 270M (18 layers,
262,144-token vocabulary), each stage in a fresh process (so one stage's freed memory cannot
hide the next one's peak), each time the median of --repeat runs:
  - forward: the plain forward pass, `model(input_ids)` with every position's logits (T, V): what
             a page that shows the model's predictions for the whole text computes (the baseline);
  - lens:    `playground.lens.logit_lens`: the same pass with `output_hidden_states=True` (only the
             last position's logits), then every layer's state at every position through the final
             norm and the head, in blocks of at most 64 MiB of logits, reduced to the top token,
             its probability and the final prediction's probability.
Peak memory is the highest resident set size sampled every 2 ms during the stage, minus the
resident size just before it (the model already loaded). What a lens that kept every layer's
logits would hold is printed for comparison: (layers + 1) x T x V float32.

Run: .venv/bin/python bench/bench_lens.py [--repeat 1] [--tokens 256]
The figures are in docs/bench-lens.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
TEXT = ("The old lighthouse keeper climbed the stairs every evening, counting each step as his father had "
        "taught him, and at the top he wiped the salt from the glass before lighting the lamp. ")
STAGES = ("forward", "lens")
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class PeakRSS:
    """The highest RSS seen while the block runs, sampled by a thread."""

    def __enter__(self):
        self.base = rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def grew(self) -> int:
        return self.peak - self.base


def child(model_id: str, stage: str, n_tokens: int, repeat: int) -> dict:
    import torch

    from playground import lens
    from playground.loading import load_causal_lm

    lm = load_causal_lm(model_id)
    ids = lm.tokenizer(TEXT * (n_tokens // 30 + 2))["input_ids"][:n_tokens]
    assert len(ids) == n_tokens
    x = torch.tensor([ids])
    with torch.no_grad():  # warm up kernels and the allocator
        lm.model(input_ids=x[:, :16])

    def forward():
        with torch.no_grad():
            return lm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits  # (1, T, V)

    def lens_():
        return lens.logit_lens(lm, ids)

    fn = {"forward": forward, "lens": lens_}[stage]
    times, peaks, extra = [], [], {}
    for _ in range(repeat):
        with PeakRSS() as mem:
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
        peaks.append(mem.grew)
        if stage == "lens":
            extra = {"rows": result.num_rows, "vocab": result.vocab_size,
                     "kept_bytes": result.states.numel() * result.states.element_size()}
        del result
    return {"seconds": statistics.median(times), "peak_bytes": max(peaks), **extra}


def run_child(model_id: str, stage: str, n_tokens: int, repeat: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", model_id, stage, str(n_tokens), "--repeat", str(repeat)],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "STAGE", "TOKENS"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]), args.repeat)))
        return
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), no GPU; {args.tokens} tokens; median of {args.repeat}")
    print("load average at start (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(f"{'model':<22}{'stage':<9}{'time (s)':>10}{'x forward':>11}{'peak (MiB)':>12}{'x forward':>11}  notes")
    for model_id in MODELS:
        base = None
        for stage in STAGES:
            r = run_child(model_id, stage, args.tokens, args.repeat)
            if "error" in r:
                print(f"{model_id:<22}{stage:<9} failed: {r['error']}", flush=True)
                continue
            if stage == "forward":
                base = r
            rt = r["seconds"] / base["seconds"] if base else float("nan")
            rm = r["peak_bytes"] / max(base["peak_bytes"], 1) if base else float("nan")
            notes = ""
            if stage == "lens":
                every = r["rows"] * args.tokens * r["vocab"] * 4
                notes = (f"{r['rows']} rows; keeps {mib(r['kept_bytes'])} MiB of normed states; every row's "
                         f"logits at once would be {mib(every)} MiB")
            print(f"{model_id:<22}{stage:<9}{r['seconds']:>10.2f}{rt:>10.1f}x{mib(r['peak_bytes']):>12}{rm:>10.1f}x  {notes}",
                  flush=True)
    print("load average at end (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
