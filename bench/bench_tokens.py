"""Tokenizing and rendering 100 KB of text, against the raw `tokenizers` call, in one run.

For each bundled tokenizer it times, on the same 100 KB of mixed text (prose, code, accents,
CJK, Arabic, emoji):
  - raw:        `tokenizers.Tokenizer.encode` of the model's tokenizer.json (the baseline);
  - tokenize:   `playground.tokens.tokenize` with every token detailed (ids, offsets, bytes);
  - page:       `tokenize` with the page's detail window (the first 10,000 characters);
  - render:     `components.tokens.tokens_html` of the page's spans (at most 3,000);
  - render all: `tokens_html` of every token of the 100 KB.
and prints seconds per MB and the ratio to the raw call: medians of --repeat interleaved runs.

Run: .venv/bin/python bench/bench_tokens.py [--repeat 5]
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tokenizers import Tokenizer  # noqa: E402

from components.tokens import MAX_SPANS, tokens_html  # noqa: E402
from playground import tokens as T  # noqa: E402
from playground.loading import load_tokenizer, prepare  # noqa: E402

MODELS = ["smollm2-135m-instruct", "gemma-3-270m", "all-minilm-l6-v2"]
PARAGRAPH = (
    "Tokenizers cut text into pieces before a model sees it. A naïve café in Zürich serves crème brûlée.\n"
    "def area(radius: float) -> float:\n    return 3.14159 * radius ** 2  # square units\n"
    "東京は今日晴れです。北京欢迎你。 مرحبا بالعالم ، كيف حالك؟ שלום עולם.\n"
    "Family 👨‍👩‍👧, astronaut 🧑🏽‍🚀, flag 🏳️‍🌈; numbers 1,234,567.89 and 2024-05-01T12:00:00Z.\n\n"
)


def text_of(size: int) -> str:
    out = PARAGRAPH * (size // len(PARAGRAPH.encode()) + 1)
    while len(out.encode()) > size:
        out = out[:-1]
    return out


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--kb", type=int, default=100)
    args = parser.parse_args()
    text = text_of(args.kb * 1000)
    mb = len(text.encode()) / 1e6
    print(f"{len(text.encode()):,} bytes, {len(text):,} characters; {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"median of {args.repeat} runs; seconds per MB (ratio to the raw tokenizers call)\n")
    print("| tokenizer | tokens | raw | tokenize (all detail) | page (10k chars detail) | render page spans | render all spans |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for model in MODELS:
        tok = load_tokenizer(model)
        raw = Tokenizer.from_file(str(prepare(model) / "tokenizer.json"))
        raw.no_padding()
        raw.no_truncation()
        T.tokenize(tok, text[:1000])  # warm up
        full = T.tokenize(tok, text)
        page = T.tokenize(tok, text, detail_chars=10_000)
        assert list(full.ids) == raw.encode(text).ids
        # interleaved, so that load from other processes falls on the baseline and the rest alike
        jobs = {
            "raw": lambda: raw.encode(text),
            "full": lambda: T.tokenize(tok, text),
            "page": lambda: T.tokenize(tok, text, detail_chars=10_000),
            "render": lambda: tokens_html(page, max_tokens=MAX_SPANS),
            "render_all": lambda: tokens_html(full, max_tokens=len(full.tokens)),
        }
        times: dict[str, list[float]] = {k: [] for k in jobs}
        for _ in range(args.repeat):
            for name, job in jobs.items():
                times[name].append(timed(job))
        t_raw, t_full, t_page, t_render, t_render_all = (statistics.median(times[k]) for k in jobs)

        def cell(t: float) -> str:
            return f"{t / mb:.3f} s ({t / t_raw:.1f}×)"

        print(f"| {model} | {full.count:,} | {t_raw / mb:.3f} s (1×) | {cell(t_full)} | {cell(t_page)} | "
              f"{cell(t_render)} | {cell(t_render_all)} |")


if __name__ == "__main__":
    main()
