"""The embedded store: Qdrant Edge against qdrant-client's local mode (the previous store) at
10,000 and 100,000 points: insert time, query p50 / p95 (dense, hybrid), memory, size on disk.

    .venv/bin/python bench/bench_store.py [--sizes 10000,100000] [--queries 60] [--local-max 10000]
                                          [--local-queries-at-100k 5] [--topics 12] [--engines edge,local]

Points: the real MiniLM vectors and BM25 sparse vectors of the first `--topics` topics of the
sample corpus, repeated as distinct points (each copy's dense vector jittered by N(0, 0.01) and
re-normalised) up to the size; latency depends on the number of points and their sizes, not on
what they mean. Queries: the bundled questions, embedded beforehand, top 5; hybrid is a dense and
a sparse prefetch (20 each) fused by RRF, as the page runs it. Each size runs in a child process
of its own, so memory (the process's resident set after the store is filled, minus before it was
opened) is the store's alone.

Edge is measured twice: before its HNSW index is built (plain segments: exact search, what the
page serves while the index builds in the background) and after (`build_index(wait=True)`, whose
time is printed). Local mode's hybrid query scores the sparse prefetch in Python: at 100,000
points it takes seconds, so it is measured only up to `--local-max` points unless raised, and
with `--local-queries-at-100k` queries there.

The figures are in docs/bench-store.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def corpus(n_topics: int):
    from playground.loading import load_sentence_transformer, load_tokenizer
    from playground.rag import documents
    from playground.rag.chunking import ChunkSettings, split
    from playground.rag.embedding import embed
    from playground.rag.pipeline import bundled_questions
    from playground.rag.retrieval import average_terms, sparse_document, sparse_query

    model = load_sentence_transformer("all-minilm-l6-v2")
    chunks = split(documents.sample_corpus()[:n_topics], ChunkSettings(), load_tokenizer("all-minilm-l6-v2"))
    vectors = embed(model, [c.text for c in chunks])  # (C, 384)
    avg = average_terms([c.text for c in chunks])
    sparse = [sparse_document(c.text, avg) for c in chunks]
    qs = [q.question for q in bundled_questions()]
    return chunks, vectors, sparse, embed(model, qs), [sparse_query(q) for q in qs]


def one(engine: str, size: int, n_queries: int, n_topics: int, out: str) -> None:
    """Fill a fresh store of `engine` with `size` points and measure it; write JSON to `out`."""
    from playground.rag import store
    from playground.rag.chunking import Chunk
    from playground.rag.retrieval import search

    chunks, vectors, sparse, qv, qsp = corpus(n_topics)
    rng = np.random.default_rng(0)
    reps = -(-size // len(chunks))
    points, dense, sp = [], [], []
    for r in range(reps):
        jit = vectors + rng.normal(0, 0.01, vectors.shape).astype(np.float32)
        jit /= np.linalg.norm(jit, axis=1, keepdims=True)
        for i, c in enumerate(chunks):
            if len(points) == size:
                break
            points.append(Chunk(f"{c.source}#{r}", c.position, c.start, c.end, c.text, c.tokens))
            dense.append(jit[i])
            sp.append(sparse[i])
    dense = np.stack(dense)  # (size, 384)
    res: dict = {"engine": engine, "points": size}
    with tempfile.TemporaryDirectory() as tmp:
        before = rss()
        s = store.connect(path=Path(tmp) / "s", engine=engine)
        store.ensure_collection(s, "bench", dense.shape[1], "cosine", {"embedder": "all-minilm-l6-v2"})
        t = time.perf_counter()
        store.upsert(s, "bench", points, dense, sp)
        res["insert_s"] = time.perf_counter() - t
        res["rss_mb"] = (rss() - before) / 2 ** 20

        def lat(method: str, n: int) -> list[float]:
            out_ = []
            for i in range(n):
                j = i % len(qv)
                t0 = time.perf_counter()
                search(s, "bench", method, qv[j], qsp[j], 5)
                out_.append(time.perf_counter() - t0)
            return out_

        label = "plain" if engine == "edge" else "local"
        for method in ("dense", "hybrid"):
            search(s, "bench", method, qv[0], qsp[0], 5)  # warm
            xs = lat(method, n_queries)
            res[f"{label}_{method}"] = (pct(xs, 50), pct(xs, 95), len(xs))
        if engine == "edge":
            t = time.perf_counter()
            store.build_index(s, "bench", wait=True)
            res["index_s"] = time.perf_counter() - t
            st = store.index_state(s, "bench")
            res["hnsw_segments"] = st.hnsw_segments
            for method in ("dense", "hybrid"):
                search(s, "bench", method, qv[0], qsp[0], 5)
                xs = lat(method, n_queries)
                res[f"hnsw_{method}"] = (pct(xs, 50), pct(xs, 95), len(xs))
            res["rss_after_index_mb"] = (rss() - before) / 2 ** 20
            res["disk_mb"] = store.size_on_disk(s, "bench") / 2 ** 20
        store.close(s)
    Path(out).write_text(json.dumps(res))


def main(sizes: list[int], n_queries: int, local_max: int, local_q100k: int, n_topics: int,
         engines: tuple[str, ...] = ("edge", "local")) -> None:
    from importlib.metadata import version

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, qdrant-client {version('qdrant-client')}, "
          f"qdrant-edge-py {version('qdrant-edge-py')}, load average {os.getloadavg()[0]:.1f}")
    rows = []
    for size in sizes:
        for engine in engines:
            if engine == "local" and size > local_max:
                print(f"local mode at {size:,} points: skipped (--local-max {local_max:,})")
                continue
            nq = n_queries if engine == "edge" or size < 100_000 else local_q100k
            with tempfile.NamedTemporaryFile(suffix=".json") as f:
                t = time.perf_counter()
                subprocess.run([sys.executable, __file__, "--one", engine, str(size), str(nq), str(n_topics), f.name],
                               check=True, cwd=ROOT)
                r = json.loads(Path(f.name).read_text())
            rows.append(r)
            print(f"{engine:>5} {size:>7,} points ({time.perf_counter() - t:.0f} s in all): insert {r['insert_s']:.1f} s, "
                  f"memory +{r['rss_mb']:.0f} MB" + (f", HNSW build {r['index_s']:.1f} s in a child process, "
                                                      f"+{r['rss_after_index_mb']:.0f} MB after, {r['disk_mb']:.0f} MB on disk"
                                                      if engine == "edge" else ""))
            for key in ("local_dense", "local_hybrid", "plain_dense", "plain_hybrid", "hnsw_dense", "hnsw_hybrid"):
                if key in r:
                    p50, p95, n = r[key]
                    print(f"    {key:>13}: p50 {p50:9.2f} ms  p95 {p95:9.2f} ms  ({n} queries)")
    by = {(r["engine"], r["points"]): r for r in rows}
    for size in sizes:
        e, loc = by.get(("edge", size)), by.get(("local", size))
        if e and loc:
            for m in ("dense", "hybrid"):
                print(f"{size:>7,} points, {m:>6}: local mode p50 / Edge (HNSW) p50 = "
                      f"{loc[f'local_{m}'][0] / e[f'hnsw_{m}'][0]:.0f}x; / Edge (plain, while indexing) = "
                      f"{loc[f'local_{m}'][0] / e[f'plain_{m}'][0]:.0f}x")
            print(f"{size:>7,} points, insert: local mode / Edge = {loc['insert_s'] / e['insert_s']:.0f}x")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--local-max", type=int, default=10_000)
    ap.add_argument("--local-queries-at-100k", type=int, default=5)
    ap.add_argument("--topics", type=int, default=12)
    ap.add_argument("--engines", default="edge,local", help="which stores to measure (edge, local or both)")
    a = ap.parse_args()
    main([int(x) for x in a.sizes.split(",")], a.queries, a.local_max, a.local_queries_at_100k, a.topics,
         tuple(a.engines.split(",")))
