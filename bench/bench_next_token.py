"""A slider re-render of the next-token page against the forward pass it avoids, in one run.

For each bundled causal LM and two prefix lengths (the page's default prompt, ~16 tokens,
and a walk grown to ~256 tokens) it times, as medians of --repeat runs:
  - forward:  `playground.passes.next_token_distribution` on the prefix (the baseline: the
              model call a slider would cost if the logits were not cached);
  - shape:    the core work of one re-render: `stepping.view` for the chart plus four views
              for the temperatures side by side, from the cached logits;
  - rerender: the whole page script after moving the temperature slider (Streamlit AppTest:
              the router, the sidebar, every widget and plotly figure; not the browser's
              drawing), checked to run no forward pass;
and prints each against the forward pass. Everything runs in a worker thread, as a
Streamlit script does, with OMP_WAIT_POLICY=PASSIVE unless set: on a shared 2-core
machine OpenMP's spinning threads otherwise make every tensor operation many times slower
and the figures say more about the other processes than about this page.

Run: .venv/bin/python bench/bench_next_token.py [--repeat 5] [--threads N]
The figures are in docs/bench-next-token.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LONG = ("The old lighthouse keeper climbed the stairs every evening, counting each step as his father had "
        "taught him, and at the top he wiped the salt from the glass before lighting the lamp. ") * 8


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(repeat: int, threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from streamlit.testing.v1 import AppTest

    from playground import passes, loading
    from playground import stepping as stp
    from playground.sampling import SamplingSettings

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}), load average {os.getloadavg()[0]:.1f}; median of {repeat}")
    print(f"{'model':<24}{'prefix':>8}{'forward (ms)':>14}{'shape (ms)':>12}{'rerender (ms)':>15}"
          f"{'forward/shape':>15}{'forward/rerender':>18}")
    for model_id in ("smollm2-135m-instruct", "gemma-3-270m"):
        lm = loading.load_causal_lm(model_id)
        for label, text in (("default", None), ("long", LONG)):
            prompt_text = text or "Once upon a time, in a small village by the sea, there lived a"
            ids = stp.make_prompt(lm.tokenizer, prompt_text, use_chat_template=False).ids
            forward = median_time(lambda: passes.next_token_distribution(lm, ids), repeat)
            dist = passes.next_token_distribution(lm, ids)
            s = SamplingSettings(temperature=0.8, top_p=0.9)

            def shape_all() -> None:
                stp.view(dist, s, lm.tokenizer, 15)
                for t in (0.2, 0.7, 1.0, 1.5):
                    stp.view(dist, replace(s, temperature=t), lm.tokenizer, 12)

            shape = median_time(shape_all, repeat)

            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
            at.query_params.update({"model_a": model_id, "prompt": prompt_text})
            at.run()
            at.switch_page(str(ROOT / "views/next_token.py"))
            at.run()
            assert not at.exception, at.exception
            values = iter([0.3, 0.9, 1.4, 0.6, 1.1] * (repeat // 5 + 2))
            before = passes.FORWARD_PASSES

            def move() -> None:
                at.slider(key="next_token_temperature").set_value(next(values)).run()

            rerender = median_time(move, repeat)
            assert passes.FORWARD_PASSES == before, "a slider re-render ran the model"
            assert not at.exception, at.exception
            print(f"{model_id:<24}{len(ids):>8}{forward * 1e3:>14.0f}{shape * 1e3:>12.1f}{rerender * 1e3:>15.0f}"
                  f"{forward / shape:>14.1f}x{forward / rerender:>17.2f}x", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    args = ap.parse_args()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            main(args.repeat, args.threads)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if errors:
        raise errors[0]
