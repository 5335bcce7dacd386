"""GGUF conversion time vs cached load time for the bundled models, measured in one run.

    .venv/bin/python bench/bench_loading.py [model-id ...]

Converts each model into a temporary cache (so the real cache is untouched), then loads it
from that cache, and prints both times and their ratio. The figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(ids: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PLAYGROUND_CACHE"] = tmp
        from playground import loading

        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads")
        print(f"{'model':<26}{'convert (s)':>12}{'cached load (s)':>17}{'ratio':>8}")
        for model_id in ids:
            start = time.perf_counter()
            loading.prepare(model_id)
            convert = time.perf_counter() - start
            loads = []
            for _ in range(3):
                start = time.perf_counter()
                loading.load_causal_lm(model_id)
                loads.append(time.perf_counter() - start)
            load = sorted(loads)[1]  # the median of three
            print(f"{model_id:<26}{convert:>12.1f}{load:>17.2f}{convert / load:>7.0f}x", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["smollm2-135m-instruct", "gemma-3-270m"])
