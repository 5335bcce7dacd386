"""Constrained against unconstrained generation, in one run.

For each engine entry (SmolLM2 and Gemma 3 270M on transformers, SmolLM2's GGUF file on llama.cpp)
the same prompt is streamed through `playground.generate.stream`, greedy, under a constraint with a
budget of --tokens, then without one for as many tokens as the constrained answer took (so both
runs cost the same attention). Two constraints: a JSON schema with one string field, and a regex of
exactly 30 words (a longer answer). Tokens/s after the first token, as the app reports it; the two
alternate round by round after a warm-up; medians. The constrained answers are checked to fit.

Beside it, the constraint's own cost per step without a model: `Guide.choose` on random logits of
each vocabulary (the mask, the draw and the witness check), in milliseconds.

Run: .venv/bin/python bench/bench_constrain.py [--tokens 80] [--rounds 2]
The figures are in docs/bench-constrain.md.
"""

from __future__ import annotations

import argparse
import json
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

from playground import constrain as con  # noqa: E402
from playground.generate import GenerationSettings, stream  # noqa: E402
from playground.loading import load_causal_lm  # noqa: E402
from playground.sampling import SamplingSettings  # noqa: E402
from playground.stepping import eos_ids  # noqa: E402

ENTRIES = ("smollm2-135m-instruct", "gemma-3-270m", "smollm2-135m-instruct:gguf")
PROMPT = "Write a long story about a lighthouse keeper who finds a map, as JSON."
WORDS = r"( [A-Za-z,.']+){30}"  # exactly 30 words: the answer runs about 30-40 tokens whatever the model wants
SCHEMA = {"type": "object", "properties": {"story": {"type": "string"}}, "required": ["story"],
          "additionalProperties": False}


def run(lm, n: int, spec):
    s = stream(lm, PROMPT, GenerationSettings(max_new_tokens=n), constraint=spec)
    for _ in s:
        pass
    return s.result


def mask_cost(lm, steps: int = 40) -> float:
    g = con.compile_for(con.parse("json", json.dumps(SCHEMA)), lm.tokenizer, sorted(eos_ids(lm)), 256)
    guide = con.Guide(g)
    gen = torch.Generator().manual_seed(0)
    v = len(lm.tokenizer)
    total = 0.0
    for _ in range(steps):
        logits = torch.randn(v, generator=gen) * 3
        t0 = time.perf_counter()
        guide.choose(logits, gen, SamplingSettings(temperature=1.0))
        total += time.perf_counter() - t0
    return 1000 * total / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=80)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    constraints = {"JSON schema": con.parse("json", json.dumps(SCHEMA)), "regex, 30 words": con.parse("regex", WORDS)}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__}; budget {args.tokens} greedy tokens, {args.rounds} rounds")
    rows = []
    for entry in ENTRIES:
        lm = load_causal_lm(entry)
        ms = mask_cost(lm) if entry != "smollm2-135m-instruct:gguf" else float("nan")
        for name, spec in constraints.items():
            run(lm, 12, None), run(lm, args.tokens, spec)  # warm-up (and llguidance's tokenizer, once)
            free, held, lengths = [], [], []
            for _ in range(args.rounds):
                r = run(lm, args.tokens, spec)
                assert con.check_answer(spec, r.text).valid, (entry, r.text)
                held.append(r.tokens_per_second)
                n = len(r.token_ids)
                lengths.append(n)
                free.append(run(lm, n, None).tokens_per_second)  # as many tokens, unconstrained
            f, h = statistics.median(free), statistics.median(held)
            rows.append((entry, name, statistics.median(lengths), f, h, h / f, ms))
            print(f"{entry:28s} {name:16s} {statistics.median(lengths):4.0f} tokens · unconstrained {f:6.1f} tok/s · "
                  f"constrained {h:6.1f} tok/s · ratio {h / f:.2f}")
    print("\n| entry | constraint | tokens | unconstrained tok/s | constrained tok/s | constrained / unconstrained |"
          " Guide.choose alone, ms/step |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for entry, name, n, f, h, ratio, ms in rows:
        print(f"| {entry} | {name} | {n:.0f} | {f:.1f} | {h:.1f} | {ratio:.2f} | {'—' if ms != ms else f'{ms:.2f}'} |")


if __name__ == "__main__":
    main()
