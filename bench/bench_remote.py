"""The remote engine's streaming path against a bare HTTP client, on the same loopback server.

The server is llama-cpp-python's own (``python -m llama_cpp.server``, 2 threads) serving the
bundled SmolLM2 135M GGUF file (Q4_1), started here with an API key. Each contender streams the
same request (greedy, --tokens new tokens) and reads it to the end:

- "bare": `httpx.stream("POST", ...)` with the JSON body written out by hand, each SSE line
  parsed with json.loads and its text kept: the least a client must do;
- "app": `playground.engines.remote.load(...)` then `RemoteModel.stream(...)` iterated to the
  end, as the Compare page does (a worker thread reading the stream, a queue, Chunk objects,
  the GenerationResult).

The bare client sends exactly the body the app sends (the app's first tier: stream_options,
top_k 0, repeat_penalty 1.0, seed), so the two differ only on the client side; both texts are
asserted equal. Tokens/s = tokens generated / wall time of the whole request. The contenders
alternate, --rounds times each after a warm-up; the medians are reported, and the median of the
per-round ratios (each round's two requests ran back to back, so a busy machine slows both).
The case is the app's default (no log-probabilities); with --with-logprobs also 5 alternatives
per token, both clients asking for them (the server then computes them, which costs it time).

Run: .venv/bin/python bench/bench_remote.py [--tokens 128] [--rounds 5] [--api chat|completions] [--with-logprobs]
The figures are in docs/bench-remote.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["PLAYGROUND_DATA"] = tempfile.mkdtemp(prefix="bench-remote-")  # the endpoint store of this run only

import httpx  # noqa: E402

from playground.endpoints import add_endpoint  # noqa: E402
from playground.engines import remote  # noqa: E402
from playground.generate import GenerationSettings  # noqa: E402
from playground.registry import endpoint_id  # noqa: E402
from tests.openai_server import LlamaServer  # noqa: E402

KEY = "bench-" + os.urandom(8).hex()
PROMPT_RAW = "The history of Paris begins"
PROMPT_CHAT = "Tell me about the history of Paris, from its beginnings to today."


def bare(url: str, body: dict, templated: bool) -> tuple[float, str, int]:
    """A bare streaming client: POST, read the SSE lines, keep the text. (seconds, text, chunks)"""
    t0 = time.perf_counter()
    parts: list[str] = []
    with httpx.stream("POST", url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            for ch in json.loads(data).get("choices") or []:
                text = (ch.get("delta") or {}).get("content") if templated else ch.get("text")
                if text:
                    parts.append(text)
    return time.perf_counter() - t0, "".join(parts), len(parts)


def app(lm, prompt: str, settings: GenerationSettings, templated: bool, top_logprobs: int):
    t0 = time.perf_counter()
    s = lm.stream(prompt, settings, use_chat_template=templated, top_logprobs=top_logprobs)
    for _ in s:
        pass
    return time.perf_counter() - t0, s.result


def body_of(lm, prompt: str, settings: GenerationSettings, templated: bool, top_logprobs: int) -> dict:
    """The body the app sends first (its first tier), for the bare client to send too."""
    s = lm.stream(prompt, settings, use_chat_template=templated, top_logprobs=top_logprobs)
    return s._bodies()[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--with-logprobs", action="store_true")
    ap.add_argument("--api", choices=("chat", "completions"), default="completions")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    templated = args.api == "chat"
    prompt = PROMPT_CHAT if templated else PROMPT_RAW
    path = "/chat/completions" if templated else "/completions"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    server = LlamaServer(api_key=KEY, threads=args.threads, log=Path(tempfile.mkdtemp()) / "server.log").start()
    try:
        add_endpoint("bench", server.url)
        lm = remote.load(endpoint_id("bench", "smollm2"), api_key=KEY)
        settings = GenerationSettings(max_new_tokens=args.tokens, temperature=0.0)
        print(f"server: llama_cpp.server, SmolLM2 135M Q4_1, {args.threads} threads, {args.api} API, "
              f"{args.tokens} tokens greedy, median of {args.rounds}; weights repacked: {server.repack}")
        for top in ((0, 5) if args.with_logprobs else (0,)):
            body = body_of(lm, prompt, settings, templated, top)
            bare(server.url + path, body, templated)  # warm-up (and the server's prompt cache)
            app(lm, prompt, settings, templated, top)
            b_speed, a_speed, ratios = [], [], []
            for _ in range(args.rounds):
                bt, btext, _ = bare(server.url + path, body, templated)
                at, res = app(lm, prompt, settings, templated, top)
                assert res.text == btext, (res.text[:80], btext[:80])
                assert res.error is None, res.error
                n = res.new_tokens
                b_speed.append(n / bt)
                a_speed.append(n / at)
                ratios.append(bt / at)
            b, a = statistics.median(b_speed), statistics.median(a_speed)
            print(f"top_logprobs={top}: {n} tokens ({res.finish_reason}); bare httpx {b:.2f} tok/s, "
                  f"app {a:.2f} tok/s, ratio of medians {a / b:.3f}, median per-round ratio "
                  f"{statistics.median(ratios):.3f} (goal >= 0.9; rounds {', '.join(f'{r:.2f}' for r in ratios)}); "
                  f"app time to first token {res.time_to_first_token * 1000:.0f} ms")
    finally:
        server.stop()
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
