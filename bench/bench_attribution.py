"""Time of each attribution method over a ~64-token prompt, against the plain forward pass of the same text.

For SmolLM2 135M Instruct and Gemma 3 270M, in one process per model (the model loaded once), one
run each (the machine is shared; --repeat takes the median of more):
  - forward:               `model(input_ids)` under no_grad, the last position's logits only: what the
                           Next token page runs for a prefix (the baseline);
  - gradient_x_input:      playground.attribution.gradient_x_input: one forward and one backward pass
                           with respect to the input embeddings;
  - integrated_gradients:  playground.attribution.integrated_gradients at the default 32 steps (points on
                           the path), in batches of interpolated inputs; its completeness gap is printed;
  - integrated_gradients_64: the same at 64 steps, the most MAX_TOKEN_STEPS allows at 64 tokens;
  - attention_rollout:     playground.attribution.attention_rollout: one forward pass with the exact eager
                           attention weights (playground.attend.weights_needed) and the rollout product.
The target is the model's top next token. Peak memory is the highest resident set size sampled every
2 ms during the stage, minus the resident size just before it.

Run: .venv/bin/python bench/bench_attribution.py [--repeat 1] [--tokens 64]
The figures are in docs/bench-attribution.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_lens import PeakRSS  # noqa: E402  (the same sampler)

MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
TEXT = ("The old lighthouse keeper climbed the stairs every evening, counting each step as his father had "
        "taught him, and at the top he wiped the salt from the glass before lighting the lamp. ")
STAGES = ("forward", "gradient_x_input", "integrated_gradients", "integrated_gradients_64", "attention_rollout")


def child(model_id: str, n_tokens: int, repeat: int) -> list[dict]:
    import torch

    from playground import attribution as attr
    from playground.loading import load_causal_lm

    lm = load_causal_lm(model_id)
    ids = lm.tokenizer(TEXT * (n_tokens // 30 + 2))["input_ids"][:n_tokens]
    assert len(ids) == n_tokens
    x = torch.tensor([ids])
    with torch.no_grad():  # warm up kernels and the allocator
        target = int(lm.model(input_ids=x, attention_mask=torch.ones_like(x), logits_to_keep=1).logits[0, -1].argmax())

    def forward():
        with torch.no_grad():
            return lm.model(input_ids=x, attention_mask=torch.ones_like(x), logits_to_keep=1).logits

    fns = {"forward": forward,
           "gradient_x_input": lambda: attr.gradient_x_input(lm, ids, target),
           "integrated_gradients": lambda: attr.integrated_gradients(lm, ids, target),
           "integrated_gradients_64": lambda: attr.integrated_gradients(lm, ids, target, steps=64),
           "attention_rollout": lambda: attr.attention_rollout(lm, ids, target)}
    rows = []
    for stage in STAGES:
        times, peaks, extra = [], [], {}
        for _ in range(repeat):
            with PeakRSS() as mem:
                start = time.perf_counter()
                result = fns[stage]()
                times.append(time.perf_counter() - start)
            peaks.append(mem.grew)
            if stage.startswith("integrated_gradients"):
                extra = {"gap": result.completeness_gap, "delta": result.f_input - result.f_baseline,
                         "passes": result.passes, "batch": attr.batch_size(lm, n_tokens)}
            del result
        rows.append({"stage": stage, "seconds": statistics.median(times), "peak_bytes": max(peaks), **extra})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--child", metavar="MODEL")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.tokens, args.repeat)))
        return
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), no GPU; {args.tokens} tokens; median of {args.repeat}")
    print("load average at start (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(f"{'model':<22}{'stage':<22}{'time (s)':>10}{'x forward':>11}{'peak (MiB)':>12}  notes")
    for model_id in MODELS:
        out = subprocess.run([sys.executable, __file__, "--child", model_id, "--tokens", str(args.tokens),
                              "--repeat", str(args.repeat)], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        if out.returncode != 0:
            print(f"{model_id:<22} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
            continue
        rows = json.loads(out.stdout.strip().splitlines()[-1])
        base = rows[0]["seconds"]
        for r in rows:
            notes = ""
            if r["stage"].startswith("integrated_gradients"):
                notes = (f"{64 if r['stage'].endswith('64') else 32} points in {r['passes']} batched passes (up to {r['batch']} inputs each); completeness "
                         f"gap {r['gap']:+.3f} of {r['delta']:.3f} nats ({abs(r['gap']) / abs(r['delta']):.1%})")
            print(f"{model_id:<22}{r['stage']:<22}{r['seconds']:>10.2f}{r['seconds'] / base:>10.1f}x"
                  f"{r['peak_bytes'] / 2**20:>12,.0f}  {notes}", flush=True)
    print("load average at end (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
