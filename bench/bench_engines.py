"""Engines: llama.cpp through the app against bare llama-cpp-python, and one model on two engines.

1. app vs bare: the bundled SmolLM2 Q4_1 GGUF file, greedy, --tokens new tokens, the same prompt
   ids, the same threads (every core), context size (4,096) and weight layout. "app" is
   `playground.generate.stream` on the ``smollm2-135m-instruct:gguf`` entry iterated to the end
   (a worker thread, a queue, each token's log-probability and top 20 alternatives, incremental
   decoding); "bare" is `Llama.generate(ids, temp=0)` on a `Llama` of its own, stopped after the
   same number of tokens (llama.cpp's greedy sampler in C, nothing else), and, for reference,
   `Llama.create_completion(ids, stream=True, temperature=0)`. Both give the same tokens (asserted).
   Both keep their KV cache between rounds, so a round re-reads one prompt token. The contenders
   alternate, --rounds times each after a warm-up; medians are reported.
2. one model, two engines: SmolLM2 135M on transformers fp32 (`load_causal_lm`, the de-quantized
   copy) and on llama.cpp (the Q4_1 file), both through the app's streaming path: tokens/s, time to
   first token, memory, load time; and over a fixed text, the top-1 agreement and mean KL of
   llama.cpp's next-token distributions against transformers fp32.

Run: .venv/bin/python bench/bench_engines.py [--tokens 128] [--rounds 3]
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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from playground.engines import llamacpp  # noqa: E402
from playground.generate import GenerationSettings, stream  # noqa: E402
from playground.loading import load_causal_lm  # noqa: E402

GGUF_ENTRY = "smollm2-135m-instruct:gguf"
FP32_ENTRY = "smollm2-135m-instruct"
PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a map."
TEXT = ("The Moon is Earth's only natural satellite. It orbits at an average distance of 384,400 km, "
        "about thirty times the diameter of Earth. The Moon always shows the same face to Earth, "
        "because its rotation is tidally locked to its orbit. Its gravity causes the tides of the oceans.")


def app(lm, n: int):
    s = stream(lm, PROMPT, GenerationSettings(max_new_tokens=n))
    start = time.perf_counter()
    for _ in s:
        pass
    wall = time.perf_counter() - start
    return s.result, wall


def bare_generate(llm, ids: list[int], n: int) -> tuple[list[int], float]:
    out: list[int] = []
    start = time.perf_counter()
    for tok in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        out.append(int(tok))
        if len(out) == n:
            break
    return out, time.perf_counter() - start


def bare_completion(llm, ids: list[int], n: int) -> tuple[int, float]:
    start = time.perf_counter()
    count = 0
    for _ in llm.create_completion(ids, max_tokens=n, temperature=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                   repeat_penalty=1.0, stream=True):
        count += 1
    return count, time.perf_counter() - start


def agreement(ref, lm, text: str) -> tuple[float, float, int]:
    ids = ref.tokenizer(text, return_tensors="pt").input_ids[0]  # (T,)
    with torch.no_grad():
        want = ref.model(input_ids=ids[None]).logits[0].float()  # (T, V)
    got = lm.position_logits(ids)  # (T, V)
    top1 = float((want.argmax(-1) == got.argmax(-1)).float().mean())
    kl = torch.nn.functional.kl_div(torch.log_softmax(got, -1), torch.log_softmax(want, -1), log_target=True,
                                    reduction="none").sum(-1)  # (T,) KL(fp32 || llama.cpp), nats
    return top1, float(kl.mean()), int(ids.shape[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import llama_cpp

    print(f"machine: {platform.machine()}, {llamacpp.cores()} cores, torch {torch.__version__}, "
          f"llama-cpp-python {llama_cpp.__version__}, load average {os.getloadavg()[0]:.1f}", flush=True)
    lm = load_causal_lm(GGUF_ENTRY)
    print(f"weights repacked by llama.cpp: {lm.repack}", flush=True)
    app(lm, 8)  # warm-up
    ids = list(stream(lm, PROMPT, GenerationSettings(max_new_tokens=1)).prompt_ids)
    # the same file, threads, context and weight layout (repacked or not, see llamacpp.repack_ok)
    llm = llamacpp._llama(lm.path, lm.repack, n_ctx=lm.n_ctx, n_batch=llamacpp.N_BATCH,
                          n_threads=llamacpp.cores(), n_threads_batch=llamacpp.cores(), verbose=False)
    n = args.tokens
    first, _ = app(lm, n)
    n = first.new_tokens  # the app stops at an end-of-turn token; bare then stops at the same count
    bare_ids, _ = bare_generate(llm, ids, n)
    assert tuple(bare_ids) == first.token_ids, "bare and app greedy tokens differ"
    bare_completion(llm, ids, n)

    t_app, t_bare, t_comp, ttft = [], [], [], []
    for _ in range(args.rounds):
        r, wall = app(lm, n)
        assert r.token_ids == first.token_ids
        t_app.append(len(r.token_ids) / wall)
        ttft.append(r.time_to_first_token)
        out, wall = bare_generate(llm, ids, n)
        t_bare.append(len(out) / wall)
        count, wall = bare_completion(llm, ids, n)
        t_comp.append(count / wall)
    app_tps, bare_tps, comp_tps = (statistics.median(x) for x in (t_app, t_bare, t_comp))
    print(f"\n1. llama.cpp, {GGUF_ENTRY}, greedy, {n} new tokens, prompt {len(ids)} tokens, median of {args.rounds}")
    print(f"   bare Llama.generate                     {bare_tps:7.2f} tokens/s   baseline")
    print(f"   bare create_completion(stream=True)     {comp_tps:7.2f} tokens/s   {comp_tps / bare_tps:.2f}")
    print(f"   app streaming path (logprobs + top 20)  {app_tps:7.2f} tokens/s   {app_tps / bare_tps:.2f}  (goal >= 0.95)")
    llm.close()

    ref = load_causal_lm(FP32_ENTRY)
    app(ref, 4)
    tf_tps, tf_ttft = [], []
    for _ in range(max(1, args.rounds - 1)):
        r, wall = app(ref, n)
        tf_tps.append(len(r.token_ids) / wall)
        tf_ttft.append(r.time_to_first_token)
    top1, kl, t = agreement(ref, lm, TEXT)
    print(f"\n2. SmolLM2 135M on two engines, greedy, {n} new tokens (app path), divergence over a {t}-token text")
    print(f"   {'engine':<26}{'tokens/s':>9}{'vs fp32':>9}{'TTFT':>9}{'memory':>12}{'load':>8}"
          f"{'top-1':>8}{'mean KL':>10}")
    tf = statistics.median(tf_tps)
    print(f"   {'transformers fp32':<26}{tf:9.2f}{1.0:9.2f}{statistics.median(tf_ttft) * 1000:7.0f}ms"
          f"{ref.memory_bytes / 2**20:9.1f}MiB{ref.load_seconds:7.1f}s{1.0:8.3f}{0.0:10.4f}")
    print(f"   {'llama.cpp Q4_1':<26}{app_tps:9.2f}{app_tps / tf:9.2f}{statistics.median(ttft) * 1000:7.0f}ms"
          f"{lm.memory_bytes / 2**20:9.1f}MiB{lm.load_seconds:7.1f}s{top1:8.3f}{kl:10.4f}")
    print(f"   (llama.cpp memory: the {lm.path.stat().st_size / 2**20:.1f} MiB file, mapped, and "
          f"{lm.kv_cache_bytes / 2**20:.1f} MiB of KV cache at {lm.n_ctx:,} tokens)")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    lm.close()


if __name__ == "__main__":
    main()
