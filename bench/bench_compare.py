"""Generation speed: the app's streaming path against the bare `model.generate` loop, and the
fp32 / bf16 / int8 variants of one model; all measured in the same run, on the same settings.

1. app vs bare: SmolLM2 (fp32), greedy, a raw prompt, --tokens new tokens. "bare" is
   `model.generate(input_ids, max_new_tokens=N, do_sample=False)` called directly; "app" is
   `playground.generate.stream` (model.generate in a worker thread, a streamer handing each
   token to a queue, incremental decoding) iterated to the end, as the Compare page does.
   Both produce the same tokens (asserted). Tokens/s = new tokens / wall time of the call.
   The two alternate, --rounds times each, after one warm-up; the median is reported.
2. precision variants: fp32, bf16, int8 of the same model through the app path, same
   settings, alternating by round; tokens/s (median), memory, and the ratio to fp32.
1b. sampled: the same, with temperature 0.8, top-p 0.95, top-k 50: the app's seeded sampler
   (a logits processor that draws with the stream's own generator) against
   `model.generate(do_sample=True)` with transformers' warpers; tokens/s per call, median.
3. side by side: fp32 and int8 through `compare.SideBySide`, all at once vs one at a time:
   the wall time of the whole comparison and each model's tokens/s.

Threads: the app's generation runs `model.generate` in a worker thread (see playground.generate),
so the bare baseline also calls `model.generate` in a fresh thread; the two then differ only
by the streamer, the queue and incremental decoding. This matters on a busy machine: with
OpenMP's default active wait, torch calls made from the process's first (main) thread were
measured up to 10x slower than the same calls from another thread while other processes held
the cores (OMP_WAIT_POLICY=PASSIVE removes the difference), and fp32 generation ran up to 9x
faster after the process had made its first quantized tensor (the int8 load) than before it.
`--main-thread` also times the bare call from the main thread.

Run: .venv/bin/python bench/bench_compare.py [--tokens 32] [--rounds 5]
The figures are in docs/bench-compare.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from playground import compare  # noqa: E402
from playground.generate import GenerationSettings, encode_prompt, stream  # noqa: E402
from playground.loading import load_causal_lm  # noqa: E402

MODEL = "smollm2-135m-instruct"
PROMPT = "The history of Paris begins"


def bare(lm, n: int, in_thread: bool = True) -> tuple[float, list[int]]:
    """`model.generate` on its own: no streamer, no queue, no decoding."""
    ids = encode_prompt(lm.tokenizer, PROMPT, templated=False)  # (1, T)
    out: list[torch.Tensor] = []

    def work() -> None:
        with torch.no_grad():
            out.append(lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                         pad_token_id=lm.tokenizer.pad_token_id or lm.tokenizer.eos_token_id))

    start = time.perf_counter()
    if in_thread:
        t = threading.Thread(target=work)
        t.start()
        t.join()
    else:
        work()
    seconds = time.perf_counter() - start
    return seconds, out[0][0, ids.shape[1]:].tolist()


SAMPLED = dict(temperature=0.8, top_p=0.95, top_k=50)


def bare_sampled(lm, n: int, seed: int) -> tuple[float, list[int]]:
    """`model.generate(do_sample=True)` with transformers' own warpers and torch's global generator."""
    ids = encode_prompt(lm.tokenizer, PROMPT, templated=False)  # (1, T)
    out: list[torch.Tensor] = []

    def work() -> None:
        torch.manual_seed(seed)
        with torch.no_grad():
            out.append(lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=True,
                                         pad_token_id=lm.tokenizer.pad_token_id or lm.tokenizer.eos_token_id,
                                         **SAMPLED))

    start = time.perf_counter()
    t = threading.Thread(target=work)
    t.start()
    t.join()
    return time.perf_counter() - start, out[0][0, ids.shape[1]:].tolist()


def app(lm, n: int, **sampling) -> tuple[float, list[int]]:
    start = time.perf_counter()
    s = stream(lm, PROMPT, GenerationSettings(max_new_tokens=n, **sampling), use_chat_template=False)
    for _ in s:
        pass
    seconds = time.perf_counter() - start
    return seconds, list(s.result.token_ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--main-thread", action="store_true", help="also time the bare call from the main thread")
    args = ap.parse_args()
    n, rounds = args.tokens, args.rounds
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f} at start")
    print(f"{MODEL}, greedy, raw prompt {PROMPT!r}, {n} new tokens, {rounds} rounds (medians)\n")

    # All three are loaded before anything is timed: loading int8 runs torch's quantization once,
    # and on a busy machine that first quantization call was seen to change how fast fp32 then runs
    # (OpenMP's active wait; see the module docstring), so every figure is taken after it.
    lms = {"fp32": load_causal_lm(MODEL), "bf16": load_causal_lm(f"{MODEL}:bf16"), "int8": load_causal_lm(f"{MODEL}:int8")}
    fp32 = lms["fp32"]
    # 1. app vs bare -------------------------------------------------------------------------
    bare(fp32, n), app(fp32, n)  # warm-up
    t_bare, t_app = [], []
    for _ in range(rounds):
        s, ids_bare = bare(fp32, n)
        t_bare.append(s)
        s, ids_app = app(fp32, n)
        t_app.append(s)
        assert ids_app == ids_bare, "the app's greedy tokens differ from model.generate"
    k = len(ids_bare)
    tb, ta = statistics.median(t_bare), statistics.median(t_app)
    print("1. app streaming path vs bare model.generate (same tokens)")
    print(f"   bare model.generate   {k / tb:7.2f} tokens/s   ({tb:.3f} s for {k} tokens)")
    print(f"   app (stream)          {k / ta:7.2f} tokens/s   ({ta:.3f} s)")
    print(f"   app / bare speed      {tb / ta:7.3f}   (1.0 = no overhead)")
    if args.main_thread:
        tm = statistics.median(bare(fp32, n, in_thread=False)[0] for _ in range(rounds))
        print(f"   bare, main thread     {k / tm:7.2f} tokens/s   ({tm:.3f} s)")
    print()

    # 1b. sampled: the app draws each token in its own seeded logits processor (so that a seed
    # reproduces with other generations running); the baseline is transformers' own sampling.
    tps_bare, tps_app = [], []
    for r in range(rounds):
        s, ids = bare_sampled(fp32, n, seed=r)
        tps_bare.append(len(ids) / s)
        s, ids = app(fp32, n, seed=r, **SAMPLED)
        tps_app.append(len(ids) / s)
    mb, ma = statistics.median(tps_bare), statistics.median(tps_app)
    print(f"1b. sampled ({', '.join(f'{k} {v}' for k, v in SAMPLED.items())}): app's seeded sampler vs "
          "model.generate(do_sample=True)")
    print(f"   bare model.generate   {mb:7.2f} tokens/s")
    print(f"   app (stream, seeded)  {ma:7.2f} tokens/s")
    print(f"   app / bare speed      {ma / mb:7.3f}")
    print()

    # 2. variants ------------------------------------------------------------------------------
    for lm in lms.values():
        app(lm, 4)  # warm-up
    times: dict[str, list[float]] = {p: [] for p in lms}
    counts: dict[str, int] = {}
    for _ in range(rounds):
        for p, lm in lms.items():
            s, ids = app(lm, n)
            times[p].append(s)
            counts[p] = len(ids)
    div = {p: compare.divergence(fp32, lm, compare.SAMPLES["Encyclopedia prose"]) for p, lm in lms.items()}
    base = counts["fp32"] / statistics.median(times["fp32"])
    print("2. precision variants through the app path")
    print(f"   {'':5} {'tokens/s':>9} {'vs fp32':>8} {'memory':>10} {'load s':>7} {'mean KL':>8} {'top-1':>6}")
    for p, lm in lms.items():
        tps = counts[p] / statistics.median(times[p])
        print(f"   {p:5} {tps:9.2f} {tps / base:8.2f} {lm.memory_bytes / 2**20:7.1f} MiB {lm.load_seconds:7.2f} "
              f"{div[p].kl_mean:8.4f} {div[p].top1_agreement:6.1%}")
    print()

    # 3. side by side --------------------------------------------------------------------------
    pair = [lms["fp32"], lms["int8"]]
    entries = [compare.Entry(lm.spec.id, GenerationSettings(max_new_tokens=n), use_chat_template=False) for lm in pair]
    print("3. fp32 and int8 side by side (SideBySide)")
    for concurrent in (True, False):
        start = time.perf_counter()
        c = compare.compare(pair, PROMPT, entries, concurrent=concurrent)
        wall = time.perf_counter() - start
        speeds = ", ".join(f"{r.label.split(' · ')[-1] if r.precision != 'fp32' else 'fp32'} "
                           f"{r.metrics.tokens_per_second:.2f} tokens/s" for r in c.runs)
        print(f"   {'all at once ' if concurrent else 'one at a time'}  wall {wall:6.2f} s   ({speeds})")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
