"""Keeping each token's probability and top alternatives while generating: what it costs.

On transformers (`playground.generate.Stream`), the same greedy generation with and without the
recorder (a logits processor that takes a log-softmax and a top-20 over the vocabulary at every
step, and the alternatives' texts decoded in the consumer thread): tokens/s after the first token,
for SmolLM2 135M (49,152-token vocabulary) and Gemma 3 270M (262,144: the log-softmax and top-k
cost grows with it). The two alternate round by round after a warm-up, so they share the machine's
load; medians are reported with the ratio. Both give the same tokens (asserted). On a loaded
machine wall-clock speeds swing by tens of percent from one round to the next, so the bench also
reports the process's CPU time per token (every thread of this process, not other processes') and
the recorder's own time per step, measured alone on scores of the model's vocabulary size (its
log-softmax and top-20, and building the step's TokenLogprob with 20 texts never decoded before).

Run: .venv/bin/python bench/bench_answers.py [--tokens 64] [--rounds 3]
The figures are in docs/bench-answers.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from playground.generate import GenerationSettings, Stream, _Recorder, format_prompt, templated  # noqa: E402
from playground.loading import load_causal_lm  # noqa: E402

PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a map."


def run(lm, n: int, keep: bool):
    chat = templated(lm.tokenizer)
    s = Stream(lm, format_prompt(lm.tokenizer, PROMPT), GenerationSettings(max_new_tokens=n), chat, logprobs=keep)
    cpu = time.process_time()
    for _ in s:
        pass
    r, cpu = s.result, (time.process_time() - cpu) / n
    assert r.new_tokens == n, f"stopped after {r.new_tokens} tokens"
    assert len(r.logprobs) == (n if keep else 0)
    return r, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{args.tokens} greedy tokens, {args.rounds} alternating rounds after a warm-up; medians")
    print("| model | vocabulary | without, tokens/s | with, tokens/s | with / without | CPU ms/token without | "
          "CPU ms/token with | CPU with / without | recorder alone, ms/step | recorder / step |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mid in ("smollm2-135m-instruct", "gemma-3-270m"):
        lm = load_causal_lm(mid)
        run(lm, 8, True), run(lm, 8, False)  # warm-up
        speeds: dict[bool, list[float]] = {True: [], False: []}
        cpus: dict[bool, list[float]] = {True: [], False: []}
        ids = None
        for i in range(args.rounds):
            for keep in ((False, True) if i % 2 == 0 else (True, False)):
                r, cpu = run(lm, args.tokens, keep)
                speeds[keep].append(r.tokens_per_second)
                cpus[keep].append(cpu)
                ids = ids or r.token_ids
                assert r.token_ids == ids, "keeping the alternatives changed the tokens"
        off, on = statistics.median(speeds[False]), statistics.median(speeds[True])
        c_off, c_on = statistics.median(cpus[False]) * 1e3, statistics.median(cpus[True]) * 1e3
        rec, scores = _Recorder(), torch.randn(1, lm.model.config.vocab_size)  # (1, V)
        start = time.perf_counter()
        for _ in range(50):
            rec(None, scores)
            rec.take(0)
        alone = (time.perf_counter() - start) / 50 * 1e3
        # the consumer's side: a TokenLogprob with 20 alternatives whose texts were never decoded (the worst case)
        s = Stream(lm, PROMPT, GenerationSettings(max_new_tokens=1), False)
        values, top = torch.topk(scores[0], 20 * 50)
        start = time.perf_counter()
        for j in range(50):
            s._logprob(int(top[20 * j]), (0.0, values[20 * j:20 * j + 20].tolist(), top[20 * j:20 * j + 20].tolist()))
        alone += (time.perf_counter() - start) / 50 * 1e3
        print(f"| {mid} | {len(lm.tokenizer):,} | {off:.2f} | {on:.2f} | {on / off:.3f} | {c_off:.1f} | {c_on:.1f} | "
              f"{c_on / c_off:.3f} | {alone:.2f} | {alone / (1e3 / off):.3f} |", flush=True)
        del lm
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"{time.perf_counter() - t:.0f} s")
