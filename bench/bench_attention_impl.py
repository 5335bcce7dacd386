"""Generation with the app's attention (SDPA unless the weights are asked for) against the
eager attention every causal LM ran before, fp32 and bf16, measured in one run.

Each variant is one model object: "eager" is the converted SmolLM2 loaded with
`attn_implementation="eager"` (the app's path before this change), "app" is
`playground.loading.load_causal_lm`, which loads the same weights with the `playground`
implementation (playground.attend). Both generate --tokens greedy tokens with `model.generate`
from the same prompt; the tokens are asserted equal. Rounds alternate (eager, app, eager, app,
...) after a warm-up, so a busy machine slows both alike; the median tokens/s is reported, and
the ratio app / eager.

Run: .venv/bin/python bench/bench_attention_impl.py [--tokens 128] [--rounds 5] [--model ID]
The figures are in docs/bench-engines.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from playground.generate import encode_prompt, format_prompt  # noqa: E402
from playground.loading import load_causal_lm  # noqa: E402

PROMPT = "Explain in a few sentences why the sky is blue."


def timed(model, ids: torch.Tensor, n: int) -> tuple[float, list[int]]:
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False)
    return n / (time.perf_counter() - start), out[0, ids.shape[1]:].tolist()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.tokens} greedy tokens, {args.rounds} rounds")
    rows = []
    for precision in ("fp32", "bf16"):
        model_id = args.model if precision == "fp32" else f"{args.model}:{precision}"
        app = load_causal_lm(model_id)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        eager = AutoModelForCausalLM.from_pretrained(app.folder, dtype=dtype, attn_implementation="eager").eval()
        ids = encode_prompt(app.tokenizer, format_prompt(app.tokenizer, PROMPT), templated=True)
        timed(eager, ids, 8), timed(app.model, ids, 8)  # warm-up
        speeds: dict[str, list[float]] = {"eager": [], "app": []}
        outputs = {}
        for _ in range(args.rounds):
            for name, model in (("eager", eager), ("app", app.model)):
                tps, toks = timed(model, ids, args.tokens)
                speeds[name].append(tps)
                outputs[name] = toks
        same = sum(a == b for a, b in zip(outputs["eager"], outputs["app"]))
        e, a = statistics.median(speeds["eager"]), statistics.median(speeds["app"])
        rows.append((precision, e, a, same))
        del eager, app
    base = rows[0][1]
    print(f"{'precision':<10}{'eager tok/s':>12}{'app tok/s':>11}{'app/eager':>11}{'app/eager fp32':>16}{'same tokens':>13}")
    for precision, e, a, same in rows:
        print(f"{precision:<10}{e:>12.2f}{a:>11.2f}{a / e:>11.2f}{a / base:>16.2f}{same:>9}/{args.tokens}")


if __name__ == "__main__":
    main()
