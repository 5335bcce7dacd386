"""The run loop's overhead against the bare generation calls it makes, in the same run.

An experiment of 2 templates x ROWS rows on SmolLM2 (greedy, --tokens new tokens) is run:
  - bare:  `playground.generate.generate` on each cell's prompt, rendered beforehand: the
           generation calls and nothing else (the baseline);
  - loop:  `playground.experiments.run` on the same experiment into a fresh SQLite database:
           rendering (LangChain), streaming with callbacks, checks, saving each cell;
  - loop (timed): the loop again, its generation calls wrapped in a timer, so the overhead is
           measured inside one run: loop wall time minus the time spent in the generation
           calls it made. Immune to the machine's load changing between runs;
  - loop+embed (timed): the same with reference scoring by MiniLM (embedding cosine).
Each is repeated --repeat times in a shuffled order per repeat; medians are reported. The
outputs of the loop and of the bare calls are checked to be identical (greedy decoding). A
breakdown times the loop's own steps alone: rendering, checks, saving a cell, the embedding.

Run: .venv/bin/python bench/bench_experiments.py [--repeat 5] [--rows 4] [--tokens 16]
The figures are in docs/bench-experiments.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playground import experiments as ex  # noqa: E402
from playground.experiments import Check, Experiment, ExperimentStore, InputRow, RunSettings  # noqa: E402
from playground.generate import GenerationSettings, generate  # noqa: E402
from playground.loading import load_causal_lm, load_sentence_transformer  # noqa: E402
from playground.prompts import PromptVariant  # noqa: E402

QUESTIONS = [
    ("What is the capital of France?", "Paris"), ("How many legs does a spider have?", "eight"),
    ("What colour is the sky on a clear day?", "blue"), ("What is 2 + 2?", "4"),
    ("Which planet is known as the red planet?", "Mars"), ("What do bees make?", "honey"),
    ("What is frozen water called?", "ice"), ("How many days are in a week?", "seven"),
]
VARIANTS = (
    PromptVariant("A", "Answer in as few words as possible.\nQuestion: {question}"),
    PromptVariant("B", "{{{question}}}", system="You are a patient teacher. Answer in one sentence.", format="mustache"),
)
CHECKS = (Check("length", hi=120), Check("not contains", "sorry"), Check("regex", r"\w"), Check("valid JSON"))


def experiment(rows: int, tokens: int) -> Experiment:
    data = tuple(InputRow({"question": q}, ref) for q, ref in (QUESTIONS * 4)[:rows])
    return Experiment("bench", VARIANTS, data, RunSettings(("smollm2-135m-instruct",),
                                                          GenerationSettings(max_new_tokens=tokens)), checks=CHECKS)


def bare(lm, exp: Experiment) -> tuple[float, dict]:
    """The generation calls alone, prompts rendered beforehand (not timed)."""
    jobs = []
    for row, arm in exp.pending():
        r = ex.render_cell(exp, row, arm.variant)
        jobs.append(((row, arm.variant), r.user, r.system or None))
    outputs = {}
    start = time.perf_counter()
    for key, text, system in jobs:
        outputs[key] = generate(lm, text, exp.settings.generation, exp.settings.use_chat_template, system).text
    return time.perf_counter() - start, outputs


def loop(lm, exp: Experiment, folder: Path, embedder=None, timed: bool = False) -> tuple[float, float, dict]:
    """(wall seconds, seconds inside the generation calls or 0, outputs)."""
    store = ExperimentStore(folder / f"{exp.id}.sqlite3")
    inside = [0.0]

    def timed_generate(*args):
        t = time.perf_counter()
        result = generate(*args)
        inside[0] += time.perf_counter() - t
        return result

    start = time.perf_counter()
    ex.run(exp, store, lambda m: lm, embedder=embedder, on_cell=lambda *a: None, on_text=lambda *a: None,
           generator=timed_generate if timed else None)
    seconds = time.perf_counter() - start
    return seconds, inside[0], {(c.row, c.variant): c.output for c in exp.cells.values()}


def breakdown(lm, embedder, rows: int, tokens: int, folder: Path) -> dict[str, float]:
    """Milliseconds per cell of the loop's own steps, each timed alone over many calls."""
    exp = experiment(rows, tokens)
    n = 200
    out = {}
    t = time.perf_counter()
    for i in range(n):
        ex.render_cell(exp, i % rows, "AB"[i % 2])
    out["render (LangChain)"] = (time.perf_counter() - t) / n * 1000
    cell = ex.Cell(0, "A", "smollm2-135m-instruct", output="The capital of France is Paris.", user="u", prompt="p")
    t = time.perf_counter()
    for _ in range(n):
        ex.run_checks(exp.checks, cell.output)
        ex.exact_match(cell.output, "Paris")
        ex.token_f1(cell.output, "Paris")
    out["checks + exact + F1"] = (time.perf_counter() - t) / n * 1000
    store = ExperimentStore(folder / "breakdown.sqlite3")
    store.save(exp)
    t = time.perf_counter()
    for i in range(n):
        cell.row = i
        store.save_cell(exp.id, cell)
    out["save a cell (SQLite)"] = (time.perf_counter() - t) / n * 1000
    t = time.perf_counter()
    for _ in range(20):
        ex.embedding_similarity(embedder, cell.output, "Paris")
    out["embedding cosine (MiniLM)"] = (time.perf_counter() - t) / 20 * 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=16)
    args = ap.parse_args()

    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    lm = load_causal_lm("smollm2-135m-instruct")
    embedder = load_sentence_transformer("all-minilm-l6-v2")
    cells = 2 * args.rows
    print(f"experiment: 2 templates x {args.rows} rows = {cells} cells, greedy, {args.tokens} new tokens at most")
    bare(lm, experiment(2, args.tokens))  # warm-up: first calls allocate
    rng = random.Random(0)
    names = ["bare", "loop", "loop (timed)", "loop+embed (timed)"]
    times: dict[str, list[float]] = {k: [] for k in names}
    inside: dict[str, list[float]] = {k: [] for k in names[2:]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(args.repeat):
            order = names[:]
            rng.shuffle(order)
            outputs = {}
            for name in order:
                exp = experiment(args.rows, args.tokens)
                if name == "bare":
                    s, outputs[name] = bare(lm, exp)
                else:
                    s, gen, outputs[name] = loop(lm, exp, folder, embedder if "embed" in name else None,
                                                 timed="timed" in name)
                    if name in inside:
                        inside[name].append(gen)
                times[name].append(s)
            assert all(o == outputs["bare"] for o in outputs.values()), "the run loop's outputs differ from the bare calls'"
            print(f"  repeat {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        parts = breakdown(lm, embedder, args.rows, args.tokens, folder)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nbetween runs, median of {args.repeat} (outputs identical):")
    for k in ("bare", "loop"):
        extra = "" if k == "bare" else f"  ratio {med[k] / med['bare']:.3f} to bare"
        print(f"  {k:<20} {med[k]:7.2f} s  ({med[k] / cells * 1000:.0f} ms/cell){extra}")
    print("\ninside one run: loop wall time / time in its generation calls (median of the per-run ratios):")
    for k, gens in inside.items():
        ratios = [w / g for w, g in zip(times[k], gens, strict=True)]
        per = statistics.median([(w - g) / cells * 1000 for w, g in zip(times[k], gens, strict=True)])
        print(f"  {k:<20} ratio {statistics.median(ratios):.4f}  overhead {per:.1f} ms/cell "
              f"(generation {statistics.median(gens) / cells * 1000:.0f} ms/cell)")
    print("\nthe loop's own steps, timed alone (ms per cell):")
    for k, v in parts.items():
        print(f"  {k:<28} {v:8.3f}")


if __name__ == "__main__":
    main()
