"""The RAG core on the real sample corpus, the bundled MiniLM embedder and SmolLM2, with Qdrant in
the embedded Qdrant Edge store (and a Qdrant server when QDRANT_URL is set): chunking, indexing, persistence,
dense / sparse / hybrid retrieval, the prompt, the answer, evaluation, saved setups, bad input.

The sample corpus is indexed once per run (`corpus`) and shared: every topic of at most 10,500
characters (68 of 79 topics, about 480 chunks), which keeps the run short; the 11 long topics
(the special-method names, the compound statements, the type hierarchy...) mostly repeat the
short ones. The bundled questions whose first-named topic is in it are evaluated on it.
docs/bench-rag.md has the figures on the full corpus. Tests that need a store of their own use
a few topics. The embedded store allows one store object per folder: each test
store has its own folder. tests/test_store_edge.py compares Edge with qdrant-client's local mode.
"""

from __future__ import annotations

import io
import os
import re
import uuid

import numpy as np

import pytest

from playground.errors import ContextLengthError, InputError, StoreError, TemplateError
from playground.generate import GenerationSettings
from playground.rag import documents, setups, store
from playground.rag.chunking import METHODS, ChunkSettings, coverage, split
from playground.rag.pipeline import (
    EvalQuestion,
    IndexSpec,
    Setup,
    ask,
    build_prompt,
    bundled_questions,
    cite,
    compare,
    evaluate,
    finish,
    index,
    overlap,
    parse_questions,
    project,
)
from playground.rag.retrieval import RetrievalSettings, retrieve, search, sparse_document, sparse_query, terms

QDRANT_URL = os.environ.get("QDRANT_URL", "")
SERVER_SKIP = "QDRANT_URL is not set: the server path runs only against a real Qdrant server (e.g. QDRANT_URL=http://localhost:6333)"
BACKENDS = ["local", pytest.param("server", marks=[pytest.mark.needs_server,
                                                   pytest.mark.skipif(not QDRANT_URL, reason=SERVER_SKIP)])]
SMALL = ["assert", "break", "class", "global", "nonlocal", "pass", "with", "yield"]


@pytest.fixture(scope="module")
def tokenizer():
    from playground.loading import load_tokenizer

    return load_tokenizer("all-minilm-l6-v2")


def open_store(backend: str, tmp_path):
    if backend == "server":
        return store.connect(url=QDRANT_URL, api_key=os.environ.get("QDRANT_API_KEY") or None)
    return store.connect(path=tmp_path / "qdrant")


MAX_TOPIC_CHARS = 10_500


def corpus_topics() -> list[str]:
    return [d.source for d in documents.sample_corpus() if len(d.text) <= MAX_TOPIC_CHARS]


def corpus_questions(kind: str | None = None) -> list[EvalQuestion]:
    """The bundled questions answerable in the test corpus (their sources cut down to it)."""
    keep = set(corpus_topics())
    return [EvalQuestion(q.question, tuple(s for s in q.sources if s in keep), q.kind) for q in bundled_questions()
            if q.sources[0] in keep and (kind is None or q.kind == kind)]



@pytest.fixture(scope="session")
def corpus(tmp_path_factory, embedder):
    """The test corpus indexed with the default setup (recursive 500/50, MiniLM, cosine)."""
    from playground.loading import load_tokenizer

    client = store.connect(path=tmp_path_factory.mktemp("corpus") / "qdrant")
    docs = documents.sample_corpus(corpus_topics())
    report = index(client, docs, IndexSpec(), embedder, load_tokenizer("all-minilm-l6-v2"))
    yield client, report, docs
    client.close()


# --- documents ---------------------------------------------------------------------------------

def test_sample_corpus_is_pythons_language_reference():
    docs = documents.sample_corpus()
    assert len(docs) == len(documents.sample_topics()) >= 70
    by = {d.source: d for d in docs}
    assert 'The "assert" statement' in by["assert"].text
    assert all(d.kind == "sample" and d.text.strip() for d in docs)
    with pytest.raises(InputError, match="Unknown sample topic"):
        documents.sample_corpus(["assert", "no-such-topic"])


def _pdf(text: str) -> bytes:
    """A minimal one-page PDF with `text` in Helvetica, with a correct xref table."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def test_good_files_load():
    assert documents.load_bytes("a.txt", "Grüße, Qdrant.\n".encode()).text == "Grüße, Qdrant.\n"
    assert documents.load_bytes("b.md", b"\xef\xbb\xbf# Title\nbody").text == "# Title\nbody"  # BOM dropped
    html = documents.load_bytes("c.html", b"<html><head><title>t</title><script>x=1</script></head>"
                                          b"<body><h1>Hello</h1><p>RAG <b>pipelines</b></p></body></html>")
    assert html.text.splitlines() == ["Hello", "RAG", "pipelines"] and "x=1" not in html.text
    pdf = documents.load_bytes("d.pdf", _pdf("Vectors live in Qdrant"))
    assert pdf.kind == "pdf" and pdf.pages == 1 and "Vectors live in Qdrant" in pdf.text


@pytest.mark.parametrize("name, data, message", [
    ("empty.txt", b"", "is empty (0 bytes)"),
    ("blank.md", b"  \n\t \n", "holds no text"),
    ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "does not look like text: it holds NUL bytes"),
    ("latin1.txt", "café au lait".encode("latin-1"), "is not UTF-8: byte 0xe9 at position 3"),
    ("corrupt.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >> garbage", "corrupt PDF"),
    ("fake.pdf", b"just text, not a pdf", "is not a PDF"),
    ("table.docx", b"PK\x03\x04", "not supported"),
    ("big.txt", b"a" * (documents.MAX_BYTES + 1), "is 50.0 MB; the limit is 50.0 MB"),
])
def test_bad_files_get_clear_messages(name, data, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        documents.load_bytes(name, data)


def test_encrypted_pdf_is_refused_and_an_empty_password_one_opens():
    from pypdf import PdfReader, PdfWriter

    def encrypted(user_password: str) -> bytes:
        w = PdfWriter(clone_from=PdfReader(io.BytesIO(_pdf("Secret plans"))))
        w.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
        buf = io.BytesIO()
        w.write(buf)
        return buf.getvalue()

    with pytest.raises(InputError, match="encrypted with a password"):
        documents.load_bytes("locked.pdf", encrypted("hunter2"))
    assert "Secret plans" in documents.load_bytes("open.pdf", encrypted("")).text


# --- chunking ------------------------------------------------------------------------------

@pytest.mark.parametrize("method", list(METHODS))
def test_each_chunker_covers_the_text_in_order_within_bounds(method, tokenizer, embedder):
    size, overlap_ = {"recursive": (400, 40), "tokens": (96, 12), "sentence": (96, 12), "semantic": (96, 0)}[method]
    settings = ChunkSettings(method=method, size=size, overlap=overlap_)
    docs = documents.sample_corpus(["class", "with"] if method == "semantic" else ["assert", "class", "formatstrings"])
    chunks = split(docs, settings, tokenizer, embedder)
    for doc in docs:
        mine = [c for c in chunks if c.source == doc.source]
        assert len(mine) >= 2, f"{method} made {len(mine)} chunk(s) of {doc.source}"
        assert [c.position for c in mine] == list(range(len(mine)))
        assert all(doc.text[c.start:c.end] == c.text for c in mine), "offsets must point at the chunk's text"
        starts = [c.start for c in mine]
        assert starts == sorted(starts) and len(set(starts)) == len(starts), "chunks come in order"
        assert coverage(mine, doc.text) == 1.0, "every non-space character is in some chunk"
        for c in mine:
            if method == "recursive":
                assert len(c.text) <= size
            else:
                assert 0 < c.tokens <= size, f"{c.tokens} tokens > {size}"
        if method == "recursive":  # consecutive chunks overlap by at most `overlap` characters
            assert all(max(0, a.end - b.start) <= overlap_ for a, b in zip(mine, mine[1:]))
        if method == "tokens":  # token windows repeat exactly `overlap` tokens
            assert all(a.tokens == size for a in mine[:-1])


def test_chunk_ids_are_content_hashes(tokenizer):
    docs = documents.sample_corpus(["assert"])
    a = split(docs, ChunkSettings(), tokenizer)
    b = split(docs, ChunkSettings(), tokenizer)
    assert [c.id for c in a] == [c.id for c in b]
    assert len({c.id for c in a}) == len(a)
    edited = [documents.Document("assert", docs[0].text.replace("debugging", "DEBUGGING"), "sample")]
    assert [c.id for c in split(edited, ChunkSettings(), tokenizer)][0] != a[0].id


def test_bad_chunk_settings():
    with pytest.raises(InputError, match="overlap .* must be smaller"):
        ChunkSettings(size=100, overlap=100).check()
    with pytest.raises(InputError, match="size is 5"):
        ChunkSettings(size=5, overlap=0).check()
    with pytest.raises(InputError, match="Unknown chunking method"):
        ChunkSettings(method="paragraphs").check()


# --- the sparse encoding ---------------------------------------------------------------------

def test_sparse_vectors_are_saturated_term_frequencies():
    assert terms("Is __debug__ True? See object.__getattr__()") == ["is", "__debug__", "true", "see", "object", "__getattr__"]
    one = sparse_document("zeta alpha", avg_len=2)
    two = sparse_document("zeta zeta", avg_len=2)
    w1, w2 = max(one.values), max(two.values)
    assert w1 < w2 < 2 * w1, "a repeated term weighs more, but less than twice (k1 saturation)"
    q = sparse_query("zeta zeta alpha")
    assert len(q.indices) == 2 and q.values == [1.0, 1.0]


# --- the indexed corpus: retrieval quality -------------------------------------------------------

def test_corpus_index(corpus):
    client, report, docs = corpus
    assert len(docs) >= 60
    assert report.created and report.added == report.chunks == report.points > 400
    info = store.info(client, report.collection)
    assert info.dim == 384 and info.distance == "cosine" and info.meta["embedder"] == "all-minilm-l6-v2"
    assert info.meta["bm25_avg_len"] > 10
    assert store.is_edge(client)  # the embedded default is Qdrant Edge
    import json

    config = json.loads((client.root / report.collection / "shard" / "edge_config.json").read_text())
    assert config["sparse_vectors"][store.SPARSE]["modifier"] == "idf"
    assert sorted(store.sources(client, report.collection)) == sorted(d.source for d in docs)


def test_dense_recall_at_5_on_the_sample_questions(corpus, embedder):
    client, report, _ = corpus
    assert len(bundled_questions()) >= 50
    questions = corpus_questions()
    assert len(questions) >= 40 and sum(q.kind == "keyword" for q in questions) >= 12
    result = evaluate(client, report.collection, embedder, questions, RetrievalSettings(method="dense", top_k=5))
    assert result.recall >= 0.8, [(r.question, r.found) for r in result.rows if r.rank is None]
    assert 0 < result.mrr <= result.recall
    assert all(r.rank is None or 1 <= r.rank <= 5 for r in result.rows)


def test_hybrid_beats_dense_on_keyword_questions(corpus, embedder):
    client, report, _ = corpus
    keyword = corpus_questions("keyword")
    dense = evaluate(client, report.collection, embedder, keyword, RetrievalSettings(method="dense", top_k=5))
    hybrid = evaluate(client, report.collection, embedder, keyword, RetrievalSettings(method="hybrid", top_k=5))
    assert hybrid.mrr > dense.mrr, (hybrid.mrr, dense.mrr)
    assert hybrid.recall >= dense.recall


def test_hybrid_is_qdrants_rrf_of_the_dense_and_sparse_prefetches(corpus, embedder):
    client, report, _ = corpus
    q = "What is the value of the built-in variable __debug__?"
    r = retrieve(client, report.collection, embedder, q, RetrievalSettings(method="hybrid", top_k=10))
    deep = max(20, 4 * 10)
    dense = search(client, report.collection, "dense", r.query_vector, sparse_query(q), deep)
    sparse = search(client, report.collection, "sparse", r.query_vector, sparse_query(q), deep)
    fused: dict[str, float] = {}
    for pts in (dense, sparse):
        for i, p in enumerate(pts):
            fused[str(p.id)] = fused.get(str(p.id), 0.0) + 1.0 / (i + 2)  # Qdrant's RRF: 1 / (rank + 2 - 1), rank from 1
    expected = sorted(fused.items(), key=lambda kv: -kv[1])[:10]
    assert [h.score for h in r.hits] == pytest.approx([s for _, s in expected])
    assert {h.id for h in r.hits[:3]} == {i for i, _ in expected[:3]}
    top = r.hits[0]
    assert top.source == "assert" and "__debug__" in top.chunk.text
    assert top.ranks["hybrid"] == 1 and top.ranks["sparse"] is not None and top.ranks["dense"] is not None


def test_filters_threshold_and_neighbours(corpus, embedder):
    client, report, docs = corpus
    texts = {d.source: d.text for d in docs}
    q = "How does the with statement use a context manager?"
    only = retrieve(client, report.collection, embedder, q, RetrievalSettings(top_k=5, sources=("with", "try")))
    assert only.hits and {h.source for h in only.hits} <= {"with", "try"}
    everything = retrieve(client, report.collection, embedder, q, RetrievalSettings(top_k=10))
    scores = [h.score for h in everything.hits]
    gap = next(i for i in range(3, 9) if scores[i] - scores[i + 1] > 1e-4)  # a threshold between two hits
    cut = (scores[gap] + scores[gap + 1]) / 2
    strict = retrieve(client, report.collection, embedder, q, RetrievalSettings(top_k=10, score_threshold=cut),
                      query_vector=everything.query_vector)
    assert [h.id for h in strict.hits] == [h.id for h in everything.hits[: gap + 1]]
    wide = retrieve(client, report.collection, embedder, q, RetrievalSettings(top_k=3, neighbours=1))
    assert [h.id for h in wide.hits] == [h.id for h in everything.hits[:3]]
    assert any(h.neighbours for h in wide.hits)
    for h in wide.hits:
        positions = sorted([h.chunk.position, *(c.position for c in h.neighbours)])
        assert positions == list(range(positions[0], positions[-1] + 1)), "neighbours are contiguous"
        assert all(c.source == h.source and abs(c.position - h.chunk.position) <= 1 for c in h.neighbours)
        a, b = h.span
        # the widened text is the source between the outer offsets (whitespace between chunks normalised)
        assert h.text.split() == texts[h.source][a:b].split()


def test_prompt_holds_the_chunks_in_rank_order_and_fits(corpus, embedder, smollm2):
    client, report, _ = corpus
    q = "What happens to assert statements when Python runs with optimization enabled?"
    r = retrieve(client, report.collection, embedder, q, RetrievalSettings(top_k=5))
    settings = GenerationSettings(max_new_tokens=48)
    plan = build_prompt(smollm2, Setup().template, q, r.hits, settings)
    assert plan.used == r.hits and not plan.dropped and plan.fits
    places = [plan.prompt.index(f"[{i}] (source: {h.source})\n{h.text}") for i, h in enumerate(r.hits, start=1)]
    assert places == sorted(places), "passages appear in rank order"
    assert plan.prompt.index(q) > places[-1]
    ids = smollm2.tokenizer(plan.prompt, add_special_tokens=False).input_ids
    assert plan.prompt_tokens == len(ids) and plan.prompt_tokens + 48 <= plan.context_window == 8192
    # a window too small for all five: the lowest-ranked go first, and what is kept fits
    small = plan.prompt_tokens + 48 - 60
    cut = build_prompt(smollm2, Setup().template, q, r.hits, settings, context_window=small)
    assert cut.used == r.hits[: len(cut.used)] and cut.dropped == r.hits[len(cut.used):]
    assert 1 <= len(cut.dropped) and cut.prompt_tokens + 48 <= small
    with pytest.raises(ContextLengthError, match="Even with no passage"):
        build_prompt(smollm2, Setup().template, q, r.hits, settings, context_window=60)
    # the answer streams from exactly this prompt; citations map to the passages
    s = ask(smollm2, plan)
    streamed = "".join(c.text for c in s)
    ans = finish(plan, s)
    assert s.prompt == plan.prompt and ans.text == streamed and ans.result.prompt_tokens == plan.prompt_tokens
    assert ans.text.strip()
    for c in ans.citations:
        assert c.hit is (plan.used[c.number - 1] if c.number <= len(plan.used) else None)


def test_citations_and_templates():
    from playground.rag.chunking import Chunk
    from playground.rag.retrieval import RetrievedChunk

    hits = [RetrievedChunk(str(i), Chunk("s", i, 0, 1, "x"), 1.0, i + 1) for i in range(3)]
    cs = cite("A [2] and B [1, 3]; C [2] D [7].", hits)
    assert [c.number for c in cs] == [2, 1, 3, 7]
    assert cs[0].hit is hits[1] and cs[1].hit is hits[0] and cs[2].hit is hits[2] and cs[3].hit is None
    with pytest.raises(TemplateError, match=r"lacks \{context\}"):
        Setup(template="Question: {question}").check()
    with pytest.raises(TemplateError, match=r"uses \{audience\}"):
        Setup(template="{context} {question} for {audience}").check()


# --- persistence, re-ingest, the server path -----------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_persistence_and_reingest(backend, tmp_path, embedder, tokenizer):
    spec = IndexSpec(chunking=ChunkSettings(size=300 + (uuid.uuid4().int % 97 if backend == "server" else 0), overlap=30))
    docs = documents.sample_corpus(SMALL)
    q = "How do I declare a module-level variable inside a function?"
    client = open_store(backend, tmp_path)
    try:
        if store.exists(client, spec.collection):
            store.delete_collection(client, spec.collection)
        first = index(client, docs, spec, embedder, tokenizer)
        assert first.added == first.chunks == first.points and first.unchanged == 0
        points = {pid: (c, v.tolist()) for pid, c, v in store.scroll(client, spec.collection, with_vectors=True)}
        before = retrieve(client, spec.collection, embedder, q, RetrievalSettings(method="hybrid", top_k=5))
        store.close(client)

        client = open_store(backend, tmp_path)
        again = {pid: (c, v.tolist()) for pid, c, v in store.scroll(client, spec.collection, with_vectors=True)}
        assert again.keys() == points.keys()
        assert all(again[k][0] == points[k][0] and np.allclose(again[k][1], points[k][1]) for k in points)
        after = retrieve(client, spec.collection, embedder, q, RetrievalSettings(method="hybrid", top_k=5))
        assert [(h.id, round(h.score, 6)) for h in after.hits] == [(h.id, round(h.score, 6)) for h in before.hits]
        assert after.hits[0].source in ("global", "nonlocal")

        same = index(client, docs, spec, embedder, tokenizer)
        assert (same.added, same.unchanged, same.removed, same.points) == (0, first.chunks, 0, first.points)

        # an edited document replaces its own chunks and leaves the others alone
        edited = [d if d.source != "pass" else documents.Document("pass", d.text + "\n\nA new closing paragraph.", "sample")
                  for d in docs]
        with pytest.raises(InputError, match="already holds other text under the source name"):
            index(client, edited, spec, embedder, tokenizer)  # refused: nothing replaced unless asked
        assert store.count(client, spec.collection) == first.points
        changed = index(client, edited, spec, embedder, tokenizer, replace=True)
        assert changed.added >= 1 and changed.removed >= 1 and changed.points == first.points - changed.removed + changed.added
        assert "A new closing paragraph." in " ".join(c.text for _, c, _ in store.scroll(client, spec.collection, sources=["pass"]))
    finally:
        if backend == "server" and store.exists(client, spec.collection):
            store.delete_collection(client, spec.collection)
        store.close(client)


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_bad_input_leaves_the_index_intact(backend, tmp_path, embedder, tokenizer):
    spec = IndexSpec(chunking=ChunkSettings(size=350 + (uuid.uuid4().int % 97 if backend == "server" else 0), overlap=0))
    client = open_store(backend, tmp_path)
    try:
        if store.exists(client, spec.collection):
            store.delete_collection(client, spec.collection)
        done = index(client, documents.sample_corpus(["assert", "pass"]), spec, embedder, tokenizer)
        # a collection made with another embedding size
        other = f"{spec.collection}-8d"
        store.ensure_collection(client, other, 8, "cosine", {"embedder": "tiny-8d"})
        with pytest.raises(StoreError, match=r"holds 8-dimensional vectors \(made with tiny-8d\); the embedder picked makes 384"):
            store.ensure_collection(client, other, 384, "cosine", {"embedder": "all-minilm-l6-v2"})
        with pytest.raises(StoreError, match="was made with cosine distance, not dot"):
            store.ensure_collection(client, spec.collection, 384, "dot")
        # bad documents never reach the store
        for name, data in [("empty.txt", b""), ("bin.txt", b"\x00\x01\x02binary"), ("bad.pdf", b"%PDF-1.7 broken")]:
            with pytest.raises(InputError):
                index(client, [documents.load_bytes(name, data)], spec, embedder, tokenizer)
        with pytest.raises(InputError, match="no documents"):
            index(client, [], spec, embedder, tokenizer)
        assert store.count(client, spec.collection) == done.points
        with pytest.raises(InputError, match="no collection"):
            retrieve(client, "rag_nothing_here", embedder, "anything")
        store.delete_collection(client, other)
    finally:
        if backend == "server" and store.exists(client, spec.collection):
            store.delete_collection(client, spec.collection)
        store.close(client)


def test_a_qdrant_url_that_does_not_answer():
    from tests.conftest import free_port

    port = free_port()  # nothing listens there
    with pytest.raises(StoreError, match=f"Qdrant at http://127.0.0.1:{port} does not answer"):
        store.connect(url=f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(StoreError, match="must start with http"):
        store.connect(url="localhost:6333")


def test_a_local_folder_open_elsewhere_is_a_clear_error(tmp_path):
    client = store.connect(path=tmp_path / "q")
    try:
        with pytest.raises(StoreError, match=r"is open in this same process \(another store object\)"):
            store.connect(path=tmp_path / "q")
    finally:
        client.close()
    store.connect(path=tmp_path / "q").close()  # closed: free again
    legacy = store.connect(path=tmp_path / "old", engine="local")  # the previous version's local mode
    try:
        with pytest.raises(StoreError, match="open in another process"):
            store.connect(path=tmp_path / "old", engine="local")
    finally:
        legacy.close()


# --- A/B, evaluation, projection, saved setups --------------------------------------------------

def test_ab_overlap_projection_and_eval_of_two_setups(tmp_path, embedder, tokenizer):
    client = store.connect(path=tmp_path / "qdrant")
    try:
        docs = documents.sample_corpus(SMALL)
        a = Setup(index=IndexSpec(chunking=ChunkSettings(size=500, overlap=50)), retrieval=RetrievalSettings(method="dense", top_k=4))
        b = Setup(index=IndexSpec(chunking=ChunkSettings(size=250, overlap=25)), retrieval=RetrievalSettings(method="hybrid", top_k=4))
        for s in (a, b):
            index(client, docs, s.index, embedder, tokenizer)
        q = "What does the yield expression do in a generator?"
        ab = compare(client, (embedder, embedder), q, a, b)
        assert ab.ra.collection != ab.rb.collection and len(ab.ra.hits) == len(ab.rb.hits) == 4
        assert ab.ra.hits[0].source == ab.rb.hits[0].source == "yield"
        assert ab.overlap.a_shared[0] and ab.overlap.b_shared[0] and "yield" in ab.overlap.shared_sources
        assert 0 < ab.overlap.char_jaccard < 1 and ab.overlap.same_chunks == 0  # different chunkings
        same = overlap(ab.ra, ab.ra)
        assert same.char_jaccard == 1.0 and same.same_chunks == 4 and all(same.a_shared)

        qs = parse_questions("What does pass do? | pass\nHow do I declare a module global? | global\n"
                             "How does a class definition work? | class")
        ea = evaluate(client, a.index.collection, embedder, qs, RetrievalSettings(top_k=1))
        assert [r.found[0] for r in ea.rows] == ["pass", "global", "class"] and ea.recall == ea.mrr == 1.0

        proj = project(client, a.index.collection, ab.ra)
        assert proj.xy.shape == (store.count(client, a.index.collection), 2) and proj.query_xy.shape == (2,)
        assert sorted(r for r in proj.retrieved_rank if r) == [1, 2, 3, 4]
        assert 0 < proj.explained[1] <= proj.explained[0] < 1
    finally:
        client.close()


def test_question_files_parse():
    js = parse_questions('[{"question": "q1", "source": "a"}, {"question": "q2", "sources": ["b", "c"], "kind": "keyword"}]')
    assert [(q.question, q.sources, q.kind) for q in js] == [("q1", ("a",), "general"), ("q2", ("b", "c"), "keyword")]
    rows = parse_questions("question,source\nWhat is x?,a;b\n")
    assert rows[0].sources == ("a", "b")
    with pytest.raises(InputError, match="line 2 should read"):
        parse_questions("q | a\nno source here")
    with pytest.raises(InputError, match="not valid JSON"):
        parse_questions("[{oops")


def test_saved_setups_survive_a_restart(tmp_path):
    db = tmp_path / "setups.sqlite"
    s = Setup(index=IndexSpec(chunking=ChunkSettings(method="sentence", size=128, overlap=16), distance="dot"),
              retrieval=RetrievalSettings(method="hybrid", top_k=7, neighbours=1, sources=("assert",)))
    setups.save("hybrid sentences", s, db)
    setups.save("defaults", Setup(), db)
    # a fresh connection, as after a restart
    assert setups.names(db) == ["defaults", "hybrid sentences"]
    back = setups.load("hybrid sentences", db).setup
    assert back == s and back.index.collection == s.index.collection
    setups.delete("defaults", db)
    assert [x.name for x in setups.list_saved(db)] == ["hybrid sentences"]
    with pytest.raises(InputError, match="no saved setup"):
        setups.load("defaults", db)
    with pytest.raises(InputError, match="a name"):
        setups.save("  ", s, db)
    with pytest.raises(InputError, match="top_k is 0"):
        Setup.from_dict({**s.to_dict(), "retrieval": {**s.to_dict()["retrieval"], "top_k": 0}})


# --- the page ------------------------------------------------------------------------------------------

PAGE = "views/rag.py"
PAGE_TOPICS = "assert,pass,global,nonlocal,yield,with"


def _htmls(at) -> str:
    return "\n".join(h.proto.body for h in at.get("html"))


def _fine(at) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_page_end_to_end_sample_corpus_index_ask_ab_evaluate():
    from components import cache
    from playground.rag.pipeline import Setup
    from tests.conftest import app_test, texts

    client, lock = cache.qdrant()  # start from an empty default collection, whatever ran before
    with lock:
        if store.exists(client, Setup().index.collection):
            store.delete_collection(client, Setup().index.collection)

    at = app_test(PAGE, query={"topics_mode": "Choose topics", "topics": PAGE_TOPICS, "max_new": "24"}, timeout=600)
    _fine(at)
    assert at.title[0].value == "RAG builder"
    assert [m.value for m in at.metric][:2] == ["6", f"{sum(len(d.text) for d in documents.sample_corpus(PAGE_TOPICS.split(','))):,}"]
    assert 'class="ragv"' in _htmls(at) and "The &quot;assert&quot; statement" in _htmls(at)  # chunks over the source
    n_chunks = int(at.metric[3].value)
    assert n_chunks >= 15
    assert any("Index the chunks" in i.value for i in at.info)

    at.button(key="rag_index").click().run()  # index, with progress
    _fine(at)
    assert f"**{n_chunks} of these {n_chunks} chunks**" in texts(at)
    passages = _htmls(at)
    assert 'id="rag-a-passage-1"' in passages and "dense #1" in passages
    assert passages.index('<span class="src">assert</span>') < passages.index('id="rag-a-passage-2"')  # assert ranks first
    assert "<mark>optimization</mark>" in passages
    prompt_tokens = int(at.metric[-2].value.replace(",", ""))
    assert 200 < prompt_tokens < 8192 and at.metric[-1].value == "5 of 5"

    at.button(key="rag_answer").click().run()  # the answer streams, with citations
    _fine(at)
    assert 'class="raganswer"' in _htmls(at)
    answer = at.session_state["rag_answer_result"]
    assert len(answer.result.logprobs) == answer.result.new_tokens > 0
    assert sum('class="answer-tokens"' in m.value for m in at.markdown) == 1  # the answer token by token
    assert "tokens/s" in texts(at) and ("cites no passage" in texts(at) or "**[1]**" in texts(at) or "→ `" in texts(at))

    at.number_input(key="rag_window").set_value(prompt_tokens + 24 - 100).run()  # a smaller window: the cut rule at work
    _fine(at)
    assert any("lowest-ranked passage(s) cut to fit" in w.value for w in at.warning)
    assert "cut from the prompt" in _htmls(at)
    at.number_input(key="rag_window").set_value(8192).run()

    at.number_input(key="rag_b_chunk_size").set_value(250).run()  # A/B: B cuts smaller chunks and searches hybrid
    at.number_input(key="rag_b_chunk_overlap").set_value(25).run()
    at.button(key="rag_ab_run").click().run()
    _fine(at)
    shown = texts(at)
    assert "**Overlap:**" in shown and "Shared sources:" in shown
    assert "recursive 250/25 characters" in shown and "hybrid top-5" in shown
    assert 'id="rag-b-passage-1"' in _htmls(at) and _htmls(at).count('class="raganswer"') >= 3
    # both setups' answers token by token, as the main answer (1 + 2), each token with its probability
    tokens = [m.value for m in at.markdown if 'class="answer-tokens"' in m.value]
    assert len(tokens) == 3 and all('title="' in t and "%" in t for t in tokens)
    at.radio(key="rag_ab_shade").set_value("low probability").run()
    _fine(at)

    at.radio(key="rag_eval_source").set_value("Type questions").run()
    at.text_area(key="rag_eval_text").set_value("What does the pass statement do? | pass\n"
                                                "What is the value of __debug__? | assert\n"
                                                "How do I rebind a name in an enclosing function? | nonlocal").run()
    at.button(key="rag_eval_run").click().run()
    _fine(at)
    table = at.dataframe[0].value if len(at.dataframe) == 1 else next(d.value for d in at.dataframe if "MRR" in d.value.columns)
    assert list(table["setup"]) == ["A", "B"] and all(0 <= v <= 1 for v in table["MRR"])

    at.button(key="rag_index").click().run()  # indexing the same chunks again adds nothing
    _fine(at)
    assert "0 chunks embedded and written" in texts(at) and f"{n_chunks} already there" in texts(at)
    assert at.query_params["topics"] in (PAGE_TOPICS, [PAGE_TOPICS]) and at.query_params["b_size"] in ("250", ["250"])


def test_page_bad_input_leaves_the_index_intact():
    from tests.conftest import app_test, free_port, texts

    at = app_test(PAGE, query={"topics_mode": "Choose topics", "topics": "pass,break"}, timeout=600)
    _fine(at)
    at.button(key="rag_index").click().run()
    indexed = next(line for line in texts(at).splitlines() if "of these" in line)
    at.radio(key="rag_store_mode").set_value("Qdrant server / cluster").run()
    at.text_input(key="rag_url").set_value(f"http://127.0.0.1:{free_port()}").run()
    assert not at.exception and any("does not answer" in e.value for e in at.error)
    at.radio(key="rag_store_mode").set_value("Local (embedded, on disk)").run()
    _fine(at)
    assert indexed in texts(at)
    at.radio(key="rag_docs_mode").set_value("Paste text").run()
    assert any("Paste some text" in i.value for i in at.info)
    at.text_area(key="rag_paste_text").set_value("   \n ").run()
    assert any("Paste some text" in i.value for i in at.info) and not at.exception
    at.radio(key="rag_docs_mode").set_value("Sample corpus").run()
    at.text_area(key="rag_template").set_value("No placeholders here").run()
    assert not at.exception and any("lacks {context}, {question}" in e.value for e in at.error)
    at.text_area(key="rag_template").set_value("{context}\n\nQ: {question}").run()
    _fine(at)
    assert indexed in texts(at)
    # save the setup; it is listed
    at.text_input(key="rag_setup_name").set_value("two topics").run()
    at.button(key="rag_setup_save").click().run()
    _fine(at)
    assert any("Saved the setup 'two topics'" in s.value for s in at.success)
    assert "two topics" in at.selectbox(key="rag_setup_pick").options


def test_a_special_token_in_a_document_is_flagged_before_it_reaches_the_prompt():
    # before the browser tests: they hand the embedded store to the app server's process
    from tests.conftest import app_test

    # a chunk size of its own: its own collection, so the other page tests' collection holds no control token
    at = app_test(PAGE, query={"max_new": "8", "size": "310"}, timeout=600)
    at.radio(key="rag_docs_mode").set_value("Paste text").run()
    at.text_input(key="rag_paste_name").set_value("codeword").run()
    at.text_area(key="rag_paste_text").set_value("The secret code word of the club is <|im_end|> and nothing else.").run()
    at.button(key="rag_index").click().run()
    at.text_input(key="rag_question").set_value("What is the code word of the club?").run()
    _fine_but_warnings = [w.value for w in at.warning]
    assert any("the retrieved passages" in w and "<|im_end|>" in w for w in _fine_but_warnings), _fine_but_warnings
    assert not at.exception and not at.error


@pytest.mark.browser
def test_page_in_chromium(app_url, page):
    from components import cache
    from tests.conftest import screenshot

    cache.release_qdrant()  # local mode is one process per folder: hand the test store to the app server
    page.goto(f"{app_url}/rag?topics_mode=Choose+topics&topics=assert,pass,global,yield&max_new=32")
    page.get_by_role("heading", name="RAG builder", exact=True).wait_for()
    page.get_by_text("of these").first.wait_for()
    # widgets are drawn a moment after the text around them (placeholders first): wait for the button itself
    page.get_by_role("button", name=__import__("re").compile("Index these chunks|Index again")).first.wait_for()
    index_button = page.get_by_role("button", name="Index these chunks")
    if index_button.count():
        index_button.click()
    page.get_by_role("heading", name="4 · Retrieve", exact=True).wait_for()
    box = page.get_by_label("Question", exact=True)
    box.fill("What is the value of the built-in variable __debug__?")
    box.press("Enter")
    page.locator("#rag-a-passage-1").get_by_text("__debug__").first.wait_for()
    page.get_by_role("button", name="Answer", exact=True).click()
    try:
        page.get_by_text("tokens/s").first.wait_for()
    except Exception:
        screenshot(page, "rag-no-answer")  # what the page shows instead
        raise
    assert page.locator(".raganswer").count() >= 1
    assert "rag" in page.url.split("?")[0]
    page.set_viewport_size({"width": 1400, "height": 2600})
    page.get_by_role("heading", name="4 · Retrieve", exact=True).scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    screenshot(page, "rag")


@pytest.mark.browser
def test_sections_drawn_again_after_a_stop_show_the_values_the_server_holds(app_url, page):
    """A run that stops above the later sections (nothing indexed at this chunk size) leaves their
    widgets out; drawn again, they must show the kept values, not their defaults (an empty prompt
    template, top-k 1, a context window of 64), which the next click would send back."""
    from components import cache
    from tests.conftest import wait_idle

    cache.release_qdrant()
    page.goto(f"{app_url}/rag?docs=Paste+text&size=330&max_new=8")
    page.get_by_role("heading", name="RAG builder", exact=True).wait_for()
    page.locator(".st-key-rag_paste_text textarea").wait_for()
    wait_idle(page)
    text = page.locator(".st-key-rag_paste_text textarea")
    text.fill("The heron waited by the cold river. The code word of the club is heron.")
    text.press("Control+Enter")
    wait_idle(page)
    index = page.get_by_role("button", name=re.compile("Index these chunks|Index again"))
    index.first.wait_for()
    if page.get_by_role("button", name="Index these chunks").count():
        page.get_by_role("button", name="Index these chunks").click()
    page.get_by_role("heading", name="4 · Retrieve", exact=True).wait_for()
    wait_idle(page)
    size = page.locator(".st-key-rag_chunk_size input")
    for value in ("345", "330"):  # 345: nothing indexed, the page stops above 4 · Retrieve; 330 again
        size.fill(value)
        size.press("Enter")
        wait_idle(page)
    page.get_by_role("heading", name="4 · Retrieve", exact=True).wait_for()
    box = page.get_by_label("Question", exact=True)
    box.fill("What is the code word of the club?")
    box.press("Enter")  # the click that would send the defaults back
    wait_idle(page)
    expect_template = page.locator(".st-key-rag_template textarea")
    assert "{context}" in expect_template.input_value() and "{question}" in expect_template.input_value()
    body = page.inner_text("body")
    assert "The prompt template is empty" not in body and "the context window is 64" not in body, body[-3000:]
    page.get_by_role("button", name="Answer", exact=True).click()
    page.get_by_text("tokens/s").first.wait_for()


@pytest.mark.browser
def test_a_zip_of_files_indexes_with_progress_stops_resumes_and_is_browsed(app_url, page):
    """A .zip of 30 files (and one that is not text) uploaded on the page: the bad file is named and
    skipped, indexing shows each file and the whole, Stop keeps what was written, Index again goes on
    from there, and the collection browser shows the folder's sources."""
    import io
    import zipfile

    from components import cache
    from tests.conftest import screenshot

    cache.release_qdrant()  # the embedded store is one process per folder: hand it to the app server
    topics = documents.sample_topics()[:30]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for d in documents.sample_corpus(topics):
            zf.writestr(f"course/{d.source}.md", d.text)
        zf.writestr("course/broken.txt", b"\x00\x01\x02binary\x00" * 40)
    page.goto(f"{app_url}/rag")
    page.get_by_role("heading", name="RAG builder", exact=True).wait_for()
    page.get_by_text("Upload files", exact=True).click()
    page.locator("input[type=file]").first.set_input_files(
        {"name": "course.zip", "mimeType": "application/zip", "buffer": buf.getvalue()})
    page.get_by_text("1 file(s) skipped").wait_for()
    assert page.get_by_text("course/broken.txt does not look like text").count() >= 1
    page.get_by_text("of these").first.wait_for()
    # files are read and cut quickly and share embedding batches: the last file is named only once the
    # first batch is written, and the last batch is then still to embed
    from components.rag_sections import uploaded_documents
    from playground.loading import load_tokenizer
    from playground.rag.chunking import ChunkSettings, split
    from playground.rag.ingest import BATCH

    docs, _ = uploaded_documents([("course.zip", buf.getvalue())])
    counts = {}
    for c in split(docs, ChunkSettings(), load_tokenizer("all-minilm-l6-v2")):
        counts[c.source] = counts.get(c.source, 0) + 1
    total_chunks = sum(counts.values())
    assert BATCH < total_chunks < 2 * BATCH and sum(list(counts.values())[:-1]) >= BATCH
    page.get_by_role("button", name="Index these chunks").click()
    page.get_by_text(f"file {len(counts)} of {len(counts)}").first.wait_for()
    page.get_by_role("button", name="Stop indexing").click()
    stopped = page.get_by_text("Indexing stopped at file")
    stopped.wait_for()
    said = stopped.inner_text()
    have, total = [int(x.replace(",", "")) for x in
                   __import__("re").search(r": ([\d,]+) of these ([\d,]+) chunks", said).groups()]
    assert total == total_chunks and BATCH <= have < total, said
    page.get_by_role("button", name="Index these chunks").click()
    page.get_by_text(f"{total:,} of these {total:,} chunks").first.wait_for()
    last = page.get_by_text("Last indexing:").inner_text()
    assert f"{total - have:,} chunks embedded and written" in last and f"{have:,} already there" in last, last
    page.get_by_text("Collections in this store").click()
    page.get_by_text("course/assert.md").first.wait_for()
    page.set_viewport_size({"width": 1400, "height": 2200})
    page.get_by_text("Collections in this store").scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    screenshot(page, "rag-zip-browser")


def test_uploaded_files_and_zips_become_documents_and_bad_ones_are_named():
    import io
    import zipfile

    from components.rag_sections import uploaded_documents

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("notes/a.md", "# A\n\nFirst note.")
        zf.writestr("notes/deep/b.txt", "Second note.")
        zf.writestr("notes/bad.txt", b"\xff\xfe\x00\x00bad" * 10)
    docs, skipped = uploaded_documents([("notes.zip", buf.getvalue()), ("c.txt", b"Third."),
                                        ("broken.zip", b"PK\x03\x04 not a zip"), ("empty.md", b"")])
    assert [d.source for d in docs] == ["notes/a.md", "notes/deep/b.txt", "c.txt"]
    assert docs[1].text == "Second note."
    assert len(skipped) == 3
    assert skipped[0].startswith("notes/bad.txt ")
    assert "broken.zip is not a readable .zip file" in skipped[1]
    assert skipped[2].startswith("empty.md") and "empty" in skipped[2]


def test_a_qdrant_server_set_for_the_whole_app_is_used_and_a_dead_one_is_said(monkeypatch):
    """QDRANT_URL set for the app: the page offers no local store and connects there; a server that
    does not answer is named with what to do, and the documents and chunks above stay."""
    from tests.conftest import app_test, free_port, texts

    monkeypatch.setenv("QDRANT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("QDRANT_API_KEY", "secret-key-123")
    at = app_test(PAGE, query={"topics_mode": "Choose topics", "topics": "pass,break"}, timeout=600)
    assert not at.exception
    assert not [r for r in at.radio if r.key == "rag_store_mode"]  # no choice of store: the app's is used
    assert "the team's Qdrant server (`QDRANT_URL`)" in texts(at)
    err = " ".join(e.value for e in at.error)
    assert "does not answer" in err and "unset QDRANT_URL to use the embedded store" in err
    assert "secret-key-123" not in err and "secret-key-123" not in texts(at)
    assert [m.value for m in at.metric][:1] == ["2"]  # the documents are still there

