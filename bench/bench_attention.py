"""Time and peak memory to extract and render attention on SmolLM2, against the bare forward pass.

For 128, 512 and 2,048 tokens it measures, each stage in a fresh process (so one stage's freed
memory cannot hide the next one's peak) and each time as the median of --repeat runs:
  - forward:   the bare forward pass: the same model call the page makes, with no maps kept
               (the baseline);
  - tuple:     transformers' own `output_attentions=True`, stacked into one tensor: what a tool
               that asks the model for its attentions holds (every layer's maps, then a copy);
  - extract:   `playground.passes.attention_maps`: the maps captured layer by layer into one
               preallocated tensor (float32 up to 1 GiB of maps, float16 past it);
  - analyse:   extract + summaries (entropy, sink) + overview thumbnails (what the page computes once);
  - render:    from a kept analysis, the page's six plotly figures built and serialised to JSON
               (what a picker change costs on the server; the browser's drawing is not counted).
Peak memory is the highest resident set size sampled every 2 ms during the stage, minus the
resident size just before it (the model already loaded).

Run: .venv/bin/python bench/bench_attention.py [--repeat 3] [--tokens 128 512 2048]
The figures are in docs/bench-attention.md.
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

MODEL = "smollm2-135m-instruct"
TEXT = ("The old lighthouse keeper climbed the stairs every evening, counting each step as his father had "
        "taught him, and at the top he wiped the salt from the glass before lighting the lamp. ")
STAGES = ("forward", "tuple", "extract", "analyse", "render")
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


def child(stage: str, n_tokens: int, repeat: int) -> dict:
    import torch

    from components import attention as figs
    from playground import attention as attn
    from playground import passes as pin
    from playground.attend import weights_needed
    from playground.loading import load_causal_lm

    lm = load_causal_lm(MODEL)
    ids = lm.tokenizer(TEXT * (n_tokens // 30 + 2))["input_ids"][:n_tokens]
    assert len(ids) == n_tokens
    x = torch.tensor([ids])
    pin._run_for_attentions(lm, torch.tensor(ids[:16]))  # warm up kernels and allocator

    def forward():
        pin._run_for_attentions(lm, x[0])

    def tuple_():
        with torch.no_grad(), weights_needed():  # eager attention, as the app's maps use
            out = lm.model(input_ids=x, attention_mask=torch.ones_like(x), output_attentions=True, logits_to_keep=1)
        return torch.stack([a[0] for a in out.attentions])  # (layers, heads, T, T)

    def extract():
        return pin.attention_maps(lm, ids)

    def analyse():
        m = pin.attention_maps(lm, ids)
        return attn.Analysis(text="", maps=m, summary=attn.summarize(m), thumbs=attn.thumbnails(m, 24))

    kept = analyse() if stage == "render" else None

    def render():
        a = kept
        m = a.maps
        layer, head, index = m.num_layers // 2, 4, m.num_tokens - 1
        start, _ = attn.clamp_window(m.num_tokens, m.num_tokens - 48, 48)
        win = attn.window(m, layer, head, start, 48)
        ta = attn.token_attention(m, index, head)
        out = [
            figs.overview_figure(a.thumbs, a.summary, (layer, head)),
            figs.head_figure(win),
            figs.token_layers_figure(ta, win.start, win.stop, win.labels, causal=True, layer=layer),
            figs.sink_figure(a.summary),
            figs.entropy_figure(a.summary),
            figs.layer_means_figure(a.thumbs),
        ]
        return sum(len(f.to_json()) for f in out)

    fn = {"forward": forward, "tuple": tuple_, "extract": extract, "analyse": analyse, "render": render}[stage]
    times, peaks, extra = [], [], {}
    for _ in range(repeat):
        with PeakRSS() as mem:
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
        peaks.append(mem.grew)
        if stage in ("extract", "analyse"):
            m = result if stage == "extract" else result.maps
            extra = {"precision": m.precision, "maps_bytes": m.nbytes}
        if stage == "render":
            extra = {"json_bytes": result}
        del result
    return {"seconds": statistics.median(times), "peak_bytes": max(peaks), **extra}


def run_child(stage: str, n_tokens: int, repeat: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", stage, str(n_tokens), "--repeat", str(repeat)],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tokens", type=int, nargs="+", default=[128, 512, 2048])
    ap.add_argument("--child", nargs=2, metavar=("STAGE", "TOKENS"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.repeat)))
        return
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), no GPU; model {MODEL}; median of {args.repeat}")
    print("load average at start (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(f"{'tokens':>6} {'stage':<8}{'time (s)':>10}{'x forward':>11}{'peak (MiB)':>12}{'x forward':>11}  notes")
    for n in args.tokens:
        base = None
        for stage in STAGES:
            r = run_child(stage, n, args.repeat if n < 2048 else max(1, args.repeat - 1))
            if "error" in r:
                print(f"{n:>6} {stage:<8} failed: {r['error']}", flush=True)
                continue
            if stage == "forward":
                base = r
            rt = r["seconds"] / base["seconds"] if base else float("nan")
            rm = r["peak_bytes"] / max(base["peak_bytes"], 1) if base else float("nan")
            notes = ""
            if "precision" in r:
                notes = f"maps kept in {r['precision']}: {mib(r['maps_bytes'])} MiB"
            if "json_bytes" in r:
                notes = f"{r['json_bytes'] / 1e6:.1f} MB of figure JSON"
            print(f"{n:>6} {stage:<8}{r['seconds']:>10.3f}{rt:>10.1f}x{mib(r['peak_bytes']):>12}{rm:>10.1f}x  {notes}",
                  flush=True)
    print("load average at end (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
