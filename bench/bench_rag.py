"""RAG: indexing throughput against bare embedding, query latency at 10,000 points, and retrieval
quality on the full sample corpus, all measured in one run.

    .venv/bin/python bench/bench_rag.py [--queries 60] [--points 10000]

1. Indexing throughput: the full sample corpus (Python's language reference, 79 topics) cut with
   the default splitter (recursive, 500/50 characters), then
   - baseline: sentence-transformers' bare `model.encode(texts, batch_size=32)` of the same chunks;
   - ours: `pipeline.index` of the same chunks into a fresh local Qdrant collection (embedding in
     batches with progress, BM25 sparse vectors, upserts, the content-hash lookup).
   Each is run twice, alternating, and the faster run of each is kept (the machine may be shared).
2. Query latency at 10,000 points: the corpus's real chunk vectors and texts, repeated as distinct
   points (each copy's vector jittered by N(0, 0.01) and re-normalised) until there are 10,000;
   latency depends on the number of points and their sizes, not on what they mean. p50 / p95 of
   Qdrant local mode for dense and hybrid (two prefetches + RRF), the query already embedded; the
   baseline is a brute-force numpy top-k over the same 10,000 vectors.
3. recall@5 and MRR of dense, sparse and hybrid on the bundled question set, full corpus.

The figures are in docs/bench-rag.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def main(n_queries: int, n_points: int, n_topics: int | None) -> None:
    import torch

    from playground.loading import load_sentence_transformer, load_tokenizer
    from playground.rag import documents, store
    from playground.rag.chunking import ChunkSettings, split
    from playground.rag.pipeline import IndexSpec, bundled_questions, evaluate, index
    from playground.rag.retrieval import RetrievalSettings, search, sparse_document, sparse_query

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.1f}")
    model = load_sentence_transformer("all-minilm-l6-v2")
    tok = load_tokenizer("all-minilm-l6-v2")
    docs = documents.sample_corpus()[:n_topics] if n_topics else documents.sample_corpus()
    spec = IndexSpec(chunking=ChunkSettings())
    chunks = split(docs, spec.chunking, tok)
    texts = [c.text for c in chunks]
    print(f"corpus: {len(docs)} topics, {sum(d.chars for d in docs):,} characters -> {len(chunks):,} chunks "
          f"({sum(c.tokens for c in chunks):,} tokens)")
    model.encode(texts[:64], batch_size=32)  # warm up

    with tempfile.TemporaryDirectory() as tmp:
        from playground.rag.ingest import ingest_chunks

        groups: dict[str, list] = {}
        for c in chunks:
            groups.setdefault(c.source, []).append(c)
        bare, ours, page = [], [], []
        for attempt in range(2):  # interleaved, so a change in the machine's load hits all three alike
            start = time.perf_counter()
            model.encode(texts, batch_size=32, show_progress_bar=False)
            bare.append(time.perf_counter() - start)
            client = store.connect(path=Path(tmp) / f"q{attempt}")
            report = index(client, docs, spec, model, tok, chunks=chunks)
            ours.append(report.seconds)
            assert report.added == len(chunks)
            other = store.connect(path=Path(tmp) / f"p{attempt}")  # the RAG page's path: per file, in batches
            rep = ingest_chunks(other, list(groups.items()), spec, model)
            page.append(rep.seconds)
            assert rep.added == len(chunks)
            other.close()
            if attempt == 0:
                keep = client
            else:
                client.close()
            print(f"  run {attempt + 1}: bare encode {bare[-1]:.1f} s, pipeline.index {ours[-1]:.1f} s "
                  f"(of which embedding {report.embed_seconds:.1f} s), ingest (the page) {page[-1]:.1f} s", flush=True)
        b, o, g = min(bare), min(ours), min(page)
        print(f"indexing throughput into {store.where(keep)}: bare encode {len(chunks) / b:.1f} chunks/s; "
              f"pipeline.index {len(chunks) / o:.1f} chunks/s, ratio {b / o:.2f}; "
              f"ingest, as the page indexes ({len(groups)} files), {len(chunks) / g:.1f} chunks/s, ratio {b / g:.2f} "
              "(1.00 = no overhead)")

        # retrieval quality on the full corpus
        client = keep
        questions = bundled_questions()
        for method in ("dense", "sparse", "hybrid"):
            r = evaluate(client, spec.collection, model, questions, RetrievalSettings(method=method, top_k=5))
            kw = r.of_kind("keyword")
            print(f"full corpus, {len(questions)} questions, {method:>6}: recall@5 {r.recall:.2f}  MRR {r.mrr:.2f}   "
                  f"keyword ({len(kw.rows)}): recall@5 {kw.recall:.2f}  MRR {kw.mrr:.2f}")

        # 10,000 points
        rows = store.scroll(client, spec.collection, with_vectors=True)
        rng = np.random.default_rng(0)
        big = replace(spec, chunking=replace(spec.chunking, size=501)).collection  # a collection of its own
        store.ensure_collection(client, big, rows[0][2].shape[0], "cosine", {"embedder": "all-minilm-l6-v2"})
        avg = store.info(client, spec.collection).meta["bm25_avg_len"]
        all_vecs = []
        made = 0
        copy = 0
        while made < n_points:
            batch = rows[: n_points - made]
            vecs = np.stack([v for _, _, v in batch])
            if copy:
                vecs = vecs + rng.normal(0, 0.01, vecs.shape).astype(np.float32)
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            cs = [replace(c, source=f"{c.source}#{copy}") for _, c, _ in batch]
            store.upsert(client, big, cs, vecs, [sparse_document(c.text, avg) for c in cs])
            all_vecs.append(vecs)
            made += len(batch)
            copy += 1
        matrix = np.concatenate(all_vecs)  # (N, D), unit rows
        print(f"query latency at {store.count(client, big):,} points ({n_queries} questions, embedded beforehand):")
        qs = [questions[i % len(questions)].question for i in range(n_queries)]
        qv = model.encode(qs, batch_size=32)  # (Q, D)
        qv = qv / np.linalg.norm(qv, axis=1, keepdims=True)
        timings: dict[str, list[float]] = {"numpy": [], "dense": [], "hybrid": []}
        for q, v in zip(qs, qv):
            start = time.perf_counter()
            scores = matrix @ v  # (N,)
            top = np.argpartition(-scores, 5)[:5]
            _ = top[np.argsort(-scores[top])]  # best first, as Qdrant returns them
            timings["numpy"].append(time.perf_counter() - start)
            sv = sparse_query(q)
            for method in ("dense", "hybrid"):
                start = time.perf_counter()
                search(client, big, method, v, sv, 5)
                timings[method].append(time.perf_counter() - start)
        base = pct(timings["numpy"], 50)
        for name, values in timings.items():
            p50, p95 = pct(values, 50), pct(values, 95)
            print(f"  {name:>7}: p50 {p50:8.2f} ms  p95 {p95:8.2f} ms  ({p50 / base:6.1f}x numpy's p50)")
        client.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--topics", type=int, default=None, help="only the first N topics (a quick check; not the figures)")
    a = ap.parse_args()
    main(a.queries, a.points, a.topics)
