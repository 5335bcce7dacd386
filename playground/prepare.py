"""Convert the bundled GGUF models into the safetensors cache, once (run by scripts/setup.sh).

    python -m playground.prepare          # skip what is already cached and valid
"""

from __future__ import annotations

import sys
import time

from playground.loading import cache_root, is_prepared, prepare
from playground.registry import BUNDLED


def main() -> int:
    for spec in BUNDLED.values():
        if is_prepared(spec.id):
            print(f"  {spec.id}: ready")
            continue
        start = time.perf_counter()
        last = [-1]

        def report(fraction: float, message: str) -> None:
            pct = int(fraction * 100)
            if pct // 10 != last[0]:
                last[0] = pct // 10
                print(f"  {spec.id}: {pct:3d}% {message}", flush=True)

        prepare(spec.id, report)
        print(f"  {spec.id}: converted in {time.perf_counter() - start:.1f} s into {cache_root()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
