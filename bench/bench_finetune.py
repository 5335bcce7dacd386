"""LoRA training throughput and peak memory at the Fine-tune page's default settings, against a
forward pass of the same batches measured in the same run.

For SmolLM2 135M Instruct and Gemma 3 270M, on the bundled pirate pairs, with the page's defaults
(rank 8, alpha 16, q_proj + v_proj, batch 4, at most 128 tokens, 1 torch thread):
  - train:    a real run through the page's path (`playground.finetune.start`: its own niced process,
              1 thread) of --steps steps; tokens/s of the steps themselves and the process's peak
              resident memory (ru_maxrss: torch, the base's fp32 weights, activations, logits);
  - forward:  the baseline, in this process with 1 torch thread: `model(input_ids)` without
              gradients over the same padded batches (what one step's forward pass alone costs).
  - latency: what another session feels: the median time of a next-token pass of SmolLM2 over 64
              tokens in this process (2 threads, as the app's) with no training, and while the SmolLM2
              training runs (niced, 1 thread).
It prints the ratio train / forward of tokens/s, and the page's estimate beside the measurement
(time and memory), which is how `GFLOPS_PER_THREAD` and the memory constants in
playground/finetune.py were calibrated.

Run: .venv/bin/python bench/bench_finetune.py [--steps 8] [--write]
The figures are in docs/bench-finetune.md. The machine is shared: run it when it is quiet, and
read the figures as measured on a loaded machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["PLAYGROUND_DATA"] = tempfile.mkdtemp(prefix="bench-finetune-")  # its runs never join a real catalogue

MODELS = ("smollm2-135m-instruct", "gemma-3-270m")


def forward_tokens_per_second(base: str, settings, steps: int) -> float:
    import torch

    from playground import finetune as ft

    torch.set_num_threads(1)
    model, tok = ft._load_base(base)
    model.eval()
    ex = ft.bundled_examples()
    train_idx, _ = ft.split(len(ex.rows), settings.heldout_fraction, settings.seed)
    enc = [ft.encode(tok, ex.rows[i], settings.max_tokens) for i in train_idx]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    tokens, seconds = 0, 0.0
    with torch.no_grad():
        for s in range(1, steps + 1):
            ids, mask, _ = ft.collate([enc[i] for i in ft.batch_indices(len(enc), settings.batch_size, s, settings.seed)], pad)
            t0 = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            seconds += time.perf_counter() - t0
            tokens += ids.numel()
    return tokens / seconds


def pass_latency(n: int = 9) -> float:
    """Median seconds of one next-token pass of SmolLM2 over 64 tokens, the way the Next token page runs it."""
    import statistics

    import torch

    from playground import passes
    from playground.loading import load_causal_lm

    torch.set_num_threads(2)
    lm = load_causal_lm("smollm2-135m-instruct")
    ids = list(range(1000, 1064))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        passes.next_token_distribution(lm, ids)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--write", action="store_true", help="write docs/bench-finetune.md")
    args = ap.parse_args()

    from playground import finetune as ft
    from playground.loading import load_tokenizer, prepare

    rows = []
    quiet_latency = pass_latency()
    busy_latency = None
    for base in MODELS:
        settings = ft.LoraSettings(steps=args.steps, eval_every=200)  # held-out loss at step 0 and the end only
        ex = ft.bundled_examples()
        est = ft.estimate(base, settings, ex, load_tokenizer(base))
        name = f"bench-{base.split('-')[0]}"
        t0 = time.perf_counter()
        ft.start(name, base, settings, ex)
        if busy_latency is None:
            while ft.status(name).step < 1 and ft.status(name).active:
                time.sleep(0.5)
            busy_latency = pass_latency()
        code = ft.wait(name, timeout=1800)
        wall = time.perf_counter() - t0
        s = ft.status(name)
        assert code == 0 and s.state == "done", (code, s.state, s.message)
        fwd = forward_tokens_per_second(base, settings, args.steps)
        gflops = 4 * ft._weights(prepare(base)) * s.tokens / s.seconds / 1e9
        row = dict(base=base, steps=s.step, tokens=s.tokens, seconds=s.seconds, wall=wall, train_tps=s.tokens_per_second,
                   fwd_tps=fwd, ratio=s.tokens_per_second / fwd, peak=s.peak_bytes, est_seconds=est.seconds,
                   est_memory=est.memory_bytes, gflops=gflops, first=s.train_loss[0][1], last=s.train_loss[-1][1])
        rows.append(row)
        print(f"{base}: {s.step} steps, {s.tokens:,} tokens in {s.seconds:.1f} s of steps ({wall:.1f} s with the "
              f"process start): {row['train_tps']:,.0f} tokens/s training, {fwd:,.0f} tokens/s forward only "
              f"(ratio {row['ratio']:.2f}); peak {s.peak_bytes / 2**30:.2f} GiB (estimate {est.memory_bytes / 2**30:.2f}); "
              f"time {s.seconds:.1f} s (estimate {est.seconds:.1f} s); {gflops:.1f} GFLOP/s; loss {row['first']:.2f} -> "
              f"{row['last']:.2f}", flush=True)
    print(f"a next-token pass (SmolLM2, 64 tokens) in another session: {quiet_latency * 1000:.0f} ms with no training, "
          f"{busy_latency * 1000:.0f} ms while a training runs (ratio {busy_latency / quiet_latency:.2f})")
    load = os.getloadavg()
    if args.write:
        lines = [
            "# Fine-tune: LoRA training throughput and peak memory",
            "",
            f"Measured by `bench/bench_finetune.py --steps {args.steps}` on {platform.machine()}, "
            f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}. **The machine was shared and loaded** "
            f"(load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} over 1 / 5 / 15 min at the end of the run, "
            "other people's tests and servers running): read the absolute numbers as a loaded 2-core machine's; the "
            "ratios are steadier.",
            "",
            "Settings: the page's defaults (rank 8, alpha 16, `q_proj` + `v_proj`, batch 4, at most 128 tokens, "
            "learning rate 2e-3), the bundled pirate pairs, 1 torch thread, the training process niced to 10. "
            "Training runs through the page's own path (a child process); the baseline is a forward pass without "
            "gradients over the same padded batches, 1 thread, in the bench's process.",
            "",
            "| base | steps | tokens | training tokens/s | forward-only tokens/s | training / forward | peak memory (measured) | estimated memory | step time (measured) | estimated time | GFLOP/s (4 x params x tokens) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(f"| {r['base']} | {r['steps']} | {r['tokens']:,} | {r['train_tps']:,.0f} | {r['fwd_tps']:,.0f} | "
                         f"{r['ratio']:.2f} | {r['peak'] / 2**30:.2f} GiB | {r['est_memory'] / 2**30:.2f} GiB | "
                         f"{r['seconds']:.1f} s | {r['est_seconds']:.1f} s | {r['gflops']:.1f} |")
        lines += [
            "",
            "- Peak memory is the training process's `ru_maxrss`: the Python process with torch, transformers and peft "
            "imported, the base's fp32 weights (a copy of its own, not the app's cached model), the activations kept for "
            "the backward pass and the (batch, tokens, vocabulary) logits. Gemma's 262,144-token vocabulary makes its "
            "logits the largest part beyond the weights.",
            "- The page's estimate is a formula (playground/finetune.py `estimate`): 4 x parameters x tokens FLOPs per "
            "step at `GFLOPS_PER_THREAD` per thread, and weights + activations + logits of the largest batch for "
            "memory, calibrated from runs like this one. Once a run starts, the page shows the run's own measured "
            "speed and peak memory instead.",
            "- One training runs at a time per machine, so the memory stated is the most training adds at once.",
            "",
            "## What another session feels",
            "",
            "| a next-token pass of SmolLM2 over 64 tokens (median of 9, 2 threads) | ms |",
            "|---|---|",
            f"| no training | {quiet_latency * 1000:.0f} |",
            f"| while the SmolLM2 training runs (niced, 1 thread) | {busy_latency * 1000:.0f} |",
            f"| ratio | {busy_latency / quiet_latency:.2f} |",
            "",
            "The training process is niced to 10 and uses one thread, so the app's own passes keep most of the "
            "CPU; with `threads` at 2 it would compete for both cores.",
        ]
        (ROOT / "docs" / "bench-finetune.md").write_text("\n".join(lines) + "\n")
        print("wrote docs/bench-finetune.md")


if __name__ == "__main__":
    main()
