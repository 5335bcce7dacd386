"""The RAG pipeline end to end: index documents, build the exact prompt, answer with citations,
compare two setups (A/B), evaluate retrieval (recall@k, MRR), project embeddings (PCA).

Indexing (`index`): chunk -> look up which chunk ids the collection already holds -> embed only
the new ones -> write dense + sparse vectors -> remove the old chunks of a re-ingested source
that the new cut no longer produces -> start the HNSW index build (embedded store, without
blocking). Many files or a .zip, with stop and resume: playground.rag.ingest. Unchanged content therefore writes nothing and embeds nothing.

The prompt (`build_prompt`): a LangChain `PromptTemplate` with ``{context}`` and ``{question}``;
the context numbers the retrieved passages [1], [2]... in rank order. The exact string the model
reads (after its chat template) is counted with its tokenizer against its context window.
`CUT_RULE` says what is cut when it does not fit: the lowest-ranked passage first, whole.

The answer streams through `playground.generate.stream`; `cite` maps the [n] in the answer to
the passages. `Setup` bundles every choice (index, retrieval, model, template) so that two
setups can be compared (`compare`), evaluated (`evaluate`) and saved (playground.rag.setups).

What it leaves out: rendering (components/rag.py) and loading models (playground.loading).
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import resources
from typing import Any

import numpy as np

from playground.errors import ContextLengthError, InputError, TemplateError, WouldReplaceError
from playground.generate import (GenerationResult, GenerationSettings, Stream, encode_prompt, format_prompt, stream,
                                 templated)
from playground.options import option, validate
from playground.rag import store
from playground.rag.chunking import Chunk, ChunkSettings, split
from playground.rag.documents import Document
from playground.rag.embedding import dimension, embed
from playground.rag.retrieval import (
    Retrieval,
    RetrievalSettings,
    RetrievedChunk,
    average_terms,
    retrieve,
    sparse_document,
)
from playground.registry import DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDER

Progress = Callable[[float, str], None]

DEFAULT_TEMPLATE = (
    "Answer the question using only the numbered passages below. Cite the passage each fact comes "
    "from as [1], [2] and so on. If the passages do not hold the answer, say so.\n\n"
    "{context}\n\n"
    "Question: {question}"
)
CUT_RULE = (
    "When the prompt plus the tokens reserved for the answer do not fit in the model's context window, "
    "the lowest-ranked passage is dropped first, then the next lowest, until it fits; a passage is never "
    "cut in the middle. If the prompt does not fit even with no passage, nothing is sent."
)


def _quiet(fraction: float, message: str) -> None:
    pass


# --- the index --------------------------------------------------------------------------

@dataclass(frozen=True)
class IndexSpec:
    """What decides the contents of a collection: the embedder, the chunking and the distance."""

    embedder: str = DEFAULT_EMBEDDER
    chunking: ChunkSettings = ChunkSettings()
    distance: str = "cosine"

    @property
    def collection(self) -> str:
        """The collection's name, made from the spec (``rag_all-minilm-l6-v2_recursive-500-50_cosine``)."""
        emb = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.embedder).strip("-")
        c = self.chunking
        cut = f"semantic-p{c.breakpoint_percentile}-{c.size}" if c.method == "semantic" else f"{c.method}-{c.size}-{c.overlap}"
        return f"rag_{emb}_{cut}_{self.distance}"

    def meta(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "chunking": asdict(self.chunking), "distance": self.distance}

    def check(self) -> IndexSpec:
        self.chunking.check()
        if self.distance not in store.DISTANCES:
            raise InputError(f"Unknown distance {self.distance!r}; use one of {', '.join(store.DISTANCES)}.")
        return self


@dataclass(frozen=True)
class IndexReport:
    """What indexing did."""

    collection: str
    chunks: int  # chunks the documents were cut into
    added: int  # new points written (embedded)
    unchanged: int  # chunks already in the collection: neither embedded nor written
    removed: int  # old chunks of re-ingested sources that the new cut no longer produces
    points: int  # points in the collection afterwards
    created: bool
    embed_seconds: float
    seconds: float

    @property
    def chunks_per_second(self) -> float:
        return self.added / self.seconds if self.seconds > 0 else 0.0


def replaced(client, name: str, chunks: Sequence[Chunk]) -> dict[str, int]:
    """Per source name: how many points collection `name` holds under it that `chunks` do not have.

    Indexing `chunks` would delete those (the source's text changed: an edited file, another text
    pasted under the same name). Empty when nothing would be replaced or the collection does not exist.
    """
    if not chunks or not store.exists(client, name):
        return {}
    current = {c.id for c in chunks}
    out: dict[str, int] = {}
    for pid, chunk, _ in store.scroll(client, name, sources=sorted({c.source for c in chunks})):
        if pid not in current:
            out[chunk.source] = out.get(chunk.source, 0) + 1
    return out


def replace_message(collection: str, gone: dict[str, int]) -> str:
    names = ", ".join(f"{s!r} ({n:,} chunk{'s' if n != 1 else ''})" for s, n in sorted(gone.items())[:8])
    return (f"The collection {collection} already holds other text under the source name(s) {names}. Indexing "
            "would replace that text; nothing was changed. Confirm to replace it, or give the document another name.")


def missing(client, name: str, chunks: Sequence[Chunk]) -> int:
    """How many of `chunks` collection `name` lacks (all of them when it does not exist)."""
    if not store.exists(client, name):
        return len(chunks)
    return len(chunks) - len(store.existing_ids(client, name, [c.id for c in chunks]))


def index(client, documents: Sequence[Document], spec: IndexSpec, embedder, tokenizer,
          progress: Progress | None = None, chunks: Sequence[Chunk] | None = None, replace: bool = False) -> IndexReport:
    """Chunk, embed and write `documents` into the collection of `spec`; unchanged chunks cost nothing.

    `chunks` (already cut from `documents` with `spec.chunking`) skips the chunking step.
    Nothing is written until the documents are chunked and the collection is found compatible.
    A source whose stored text differs (its old chunks would be deleted) raises WouldReplaceError,
    writing nothing, unless `replace=True`.
    """
    report = progress or _quiet
    spec.check()
    start = time.perf_counter()
    if chunks is None:
        chunks = split(documents, spec.chunking, tokenizer, embedder, progress=lambda f, m: report(0.1 * f, m))
    if not chunks:
        raise InputError("The documents gave no chunks: there is nothing to index.")
    name = spec.collection
    gone = replaced(client, name, chunks)
    if gone and not replace:
        raise WouldReplaceError(replace_message(name, gone))
    created = store.ensure_collection(client, name, dimension(embedder), spec.distance, spec.meta())
    meta = store.info(client, name).meta
    avg_len = meta.get("bm25_avg_len")
    if avg_len is None:  # fixed once per collection, so a chunk's sparse vector never depends on when it came
        avg_len = average_terms([c.text for c in chunks])
        store.set_meta(client, name, {**spec.meta(), "bm25_avg_len": avg_len})
    ids = [c.id for c in chunks]
    have = store.existing_ids(client, name, ids)
    new = [c for c in chunks if c.id not in have]
    report(0.1, f"{len(have):,} of {len(chunks):,} chunks are already indexed; embedding {len(new):,}")
    t0 = time.perf_counter()
    vectors = embed(embedder, [c.text for c in new],
                    progress=lambda d, t: report(0.1 + 0.8 * d / t, f"embedded {d:,} / {t:,} chunks"))  # (N, D)
    embed_seconds = time.perf_counter() - t0
    sparse = [sparse_document(c.text, avg_len) for c in new]
    store.upsert(client, name, new, vectors, sparse,
                 progress=lambda d, t: report(0.9 + 0.09 * d / t, f"written {d:,} / {t:,} points"))
    current = set(ids)
    stale = [pid for pid, _, _ in store.scroll(client, name, sources=sorted({c.source for c in chunks}))
             if pid not in current]
    store.delete_points(client, name, stale)
    store.build_index(client, name)  # embedded store: the HNSW graph is built in a child process; search stays exact meanwhile
    total = store.count(client, name)
    report(1.0, f"{len(new):,} added, {len(have):,} unchanged, {len(stale):,} removed; {total:,} points")
    return IndexReport(name, len(chunks), len(new), len(have), len(stale), total, created, embed_seconds,
                       time.perf_counter() - start)


# --- the prompt -----------------------------------------------------------------------------

def check_template(template: str):
    """A LangChain PromptTemplate with exactly {context} and {question}; TemplateError otherwise."""
    from langchain_core.prompts import PromptTemplate

    if not isinstance(template, str) or not template.strip():
        raise TemplateError("The prompt template is empty: it needs {context} and {question}.")
    try:
        tpl = PromptTemplate.from_template(template)
    except Exception as exc:  # noqa: BLE001 - a stray brace
        raise TemplateError(f"The prompt template does not parse ({exc}). Write a literal brace as {{{{ or }}}}.") from exc
    have = set(tpl.input_variables)
    missing = sorted({"context", "question"} - have)
    unknown = sorted(have - {"context", "question"})
    if missing:
        raise TemplateError(f"The prompt template lacks {', '.join('{' + m + '}' for m in missing)}; it needs {{context}} and {{question}}.")
    if unknown:
        raise TemplateError(
            f"The prompt template uses {', '.join('{' + u + '}' for u in unknown)}, which nothing fills; "
            "only {context} and {question} are filled (write a literal brace as {{ or }})."
        )
    return tpl


def format_context(hits: Sequence[RetrievedChunk]) -> str:
    """The passages, numbered in rank order: ``[1] (source: assert)`` then the text."""
    return "\n\n".join(f"[{i}] (source: {h.source})\n{h.text}" for i, h in enumerate(hits, start=1))


@dataclass(frozen=True)
class PromptPlan:
    """The exact prompt: what was kept, what was cut and why, and how many tokens it takes."""

    template: str
    question: str
    text: str  # the filled template: the user message
    prompt: str  # the exact string the model reads (after its chat template, if it has one)
    prompt_tokens: int
    context_window: int
    settings: GenerationSettings
    chat_template: bool
    used: tuple[RetrievedChunk, ...]  # numbered [1]..[n] in this order (rank order)
    dropped: tuple[RetrievedChunk, ...]  # cut to fit, lowest rank first
    model_id: str
    rule: str = CUT_RULE

    @property
    def reserved(self) -> int:
        return self.settings.max_new_tokens

    @property
    def fits(self) -> bool:
        return self.prompt_tokens + self.reserved <= self.context_window


CHARS_PER_TOKEN = 4  # a model on a server: its tokenizer is not ours, so its prompt is estimated


def _count(lm, text: str, use_chat_template: bool) -> tuple[str, int]:
    if lm.tokenizer is None:  # a remote model: the server applies its own template to the text
        return text, -(-len(text) // CHARS_PER_TOKEN)
    prompt = format_prompt(lm.tokenizer, text, use_chat_template)
    return prompt, int(encode_prompt(lm.tokenizer, prompt, templated(lm.tokenizer, use_chat_template)).shape[1])


def build_prompt(lm, template: str, question: str, hits: Sequence[RetrievedChunk],
                 settings: GenerationSettings | None = None, use_chat_template: bool = True,
                 context_window: int | None = None) -> PromptPlan:
    """Fill `template` with the hits (rank order) and `question`; drop the lowest-ranked hits until it fits.

    `context_window` defaults to the model's own; a smaller one shows the cut rule at work.
    """
    s = validate(settings or GenerationSettings(max_new_tokens=128))
    tpl = check_template(template)
    if not isinstance(question, str) or not question.strip():
        raise InputError("The question is empty: type a question.")
    # a server that does not say its model's context (context_length 0): nothing is cut here; the server refuses
    known = lm.context_length or (1 << 30)
    window = int(context_window or known)
    if window > known:
        raise InputError(f"The context window asked for is {window:,} tokens; {lm.spec.name} reads at most {lm.context_length:,}.")
    used = list(hits)
    dropped: list[RetrievedChunk] = []
    chat = use_chat_template and (lm.tokenizer is None or bool(getattr(lm.tokenizer, "chat_template", None)))
    while True:
        text = tpl.format(context=format_context(used), question=question.strip())
        prompt, n = _count(lm, text, chat)
        if n + s.max_new_tokens <= window:
            break
        if not used:
            raise ContextLengthError(
                f"Even with no passage, the prompt is {n:,} tokens and {s.max_new_tokens:,} are reserved for the answer; "
                f"the context window is {window:,}. Shorten the template or the question, or ask for fewer new tokens."
            )
        dropped.insert(0, used.pop())
    return PromptPlan(template, question.strip(), text, prompt, n, window, s, chat, tuple(used), tuple(dropped), lm.spec.id)


# --- the answer -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Citation:
    """A [n] in the answer and the passage it points at (None if there is no passage n)."""

    number: int
    hit: RetrievedChunk | None


@dataclass(frozen=True)
class Answer:
    question: str
    text: str
    citations: tuple[Citation, ...]
    plan: PromptPlan
    result: GenerationResult

    @property
    def invalid_citations(self) -> list[int]:
        return [c.number for c in self.citations if c.hit is None]


_CITE = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")


def citation_spans(text: str) -> list[tuple[int, int, list[int]]]:
    """(start, end, numbers) of every citation bracket: ``[1]``, ``[2, 3]``."""
    return [(m.start(), m.end(), [int(x) for x in re.split(r"\s*[,;]\s*", m.group(1))]) for m in _CITE.finditer(text)]


def cite(text: str, used: Sequence[RetrievedChunk]) -> tuple[Citation, ...]:
    """The distinct passages cited in `text`, in order of first citation."""
    numbers = list(dict.fromkeys(n for _, _, ns in citation_spans(text) for n in ns))
    return tuple(Citation(n, used[n - 1] if 1 <= n <= len(used) else None) for n in numbers)


def ask(lm, plan: PromptPlan, plain: bool = False) -> Stream:
    """Stream the answer to `plan` through `lm` (the same prompt, token for token; with `plain`, special
    tokens typed in the question or the template reach the model as ordinary text, playground.special)."""
    if plan.model_id != lm.spec.id:
        raise InputError(f"The prompt was built for {plan.model_id}, not {lm.spec.id}: build it again.")
    s = stream(lm, plan.text, plan.settings, use_chat_template=plan.chat_template,
               plain=plain and getattr(lm, "tokenizer", None) is not None)
    assert s.prompt == plan.prompt, "the streamed prompt must be the one counted"
    return s


def finish(plan: PromptPlan, s: Stream) -> Answer:
    """The Answer once the stream is exhausted."""
    if s.result is None:
        raise InputError("The answer has not finished streaming yet.")
    return Answer(plan.question, s.result.text, cite(s.result.text, plan.used), plan, s.result)


def answer(lm, plan: PromptPlan) -> Answer:
    """The whole answer, not streamed."""
    s = ask(lm, plan)
    for _ in s:
        pass
    return finish(plan, s)


# --- setups and A/B -----------------------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    """Every choice of a pipeline: what is indexed how, how it is searched, which model answers with which template."""

    index: IndexSpec = IndexSpec()
    retrieval: RetrievalSettings = RetrievalSettings()
    generator: str = DEFAULT_CHAT_MODEL
    template: str = DEFAULT_TEMPLATE
    max_new_tokens: int = option(128, 16, 1024, "tokens reserved for the answer", 1)

    @property
    def label(self) -> str:
        return f"{self.index.chunking.label} · {self.index.embedder} · {self.index.distance} · {self.retrieval.label}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["retrieval"]["sources"] = list(self.retrieval.sources)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Setup:
        """A Setup from `to_dict()` output; InputError naming what is wrong."""
        try:
            idx = d.get("index", {})
            ret = dict(d.get("retrieval", {}))
            ret["sources"] = tuple(ret.get("sources", ()))
            setup = cls(
                index=IndexSpec(embedder=idx.get("embedder", DEFAULT_EMBEDDER), chunking=ChunkSettings(**idx.get("chunking", {})),
                                distance=idx.get("distance", "cosine")),
                retrieval=RetrievalSettings(**ret),
                generator=d.get("generator", DEFAULT_CHAT_MODEL),
                template=d.get("template", DEFAULT_TEMPLATE),
                max_new_tokens=int(d.get("max_new_tokens", 128)),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"The setup does not read as one: {exc}.") from exc
        setup.check()
        return setup

    def check(self) -> Setup:
        self.index.check()
        self.retrieval.check()
        validate(self)
        check_template(self.template)
        return self


@dataclass(frozen=True)
class Overlap:
    """How much two retrievals agree: identical chunks, hits whose text overlaps one of the other's, shared text."""

    same_chunks: int  # hits with the same point id in both (possible only with the same chunking)
    a_shared: tuple[bool, ...]  # per hit of A: does its text overlap some hit of B (same source)?
    b_shared: tuple[bool, ...]
    char_jaccard: float  # |chars of A ∩ chars of B| / |chars of A ∪ chars of B|, over (source, offset)
    shared_sources: tuple[str, ...]


def _intervals(r: Retrieval) -> dict[str, list[tuple[int, int]]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for h in r.hits:
        out.setdefault(h.source, []).append(h.span)
    return out


def _union_len(spans: list[tuple[int, int]]) -> int:
    total, cur_a, cur_b = 0, None, None
    for a, b in sorted(spans):
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    return total + ((cur_b - cur_a) if cur_b is not None else 0)


def overlap(a: Retrieval, b: Retrieval) -> Overlap:
    """The agreement of two retrievals for the same question (their chunkings may differ)."""
    ia, ib = _intervals(a), _intervals(b)

    def touches(h: RetrievedChunk, other: dict[str, list[tuple[int, int]]]) -> bool:
        s, e = h.span
        return any(x < e and s < y for x, y in other.get(h.source, []))

    inter = union = 0
    for src in set(ia) | set(ib):
        la, lb = _union_len(ia.get(src, [])), _union_len(ib.get(src, []))
        both = _union_len(ia.get(src, []) + ib.get(src, []))
        inter += la + lb - both
        union += both
    ids_b = {h.id for h in b.hits}
    return Overlap(
        same_chunks=sum(h.id in ids_b for h in a.hits),
        a_shared=tuple(touches(h, ib) for h in a.hits),
        b_shared=tuple(touches(h, ia) for h in b.hits),
        char_jaccard=inter / union if union else 0.0,
        shared_sources=tuple(sorted(set(ia) & set(ib))),
    )


# --- evaluation -----------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalQuestion:
    """A question and the source(s) that answer it; `kind` is "keyword" when it hinges on an exact identifier."""

    question: str
    sources: tuple[str, ...]
    kind: str = "general"


@dataclass(frozen=True)
class EvalRow:
    question: str
    expected: tuple[str, ...]
    kind: str
    rank: int | None  # 1-based rank of the first hit from an expected source, within k
    found: tuple[str, ...]  # the sources of the top k hits


@dataclass(frozen=True)
class EvalResult:
    """recall@k and MRR@k of one setup over a question set."""

    label: str
    k: int
    rows: tuple[EvalRow, ...]
    seconds: float

    @property
    def recall(self) -> float:
        return sum(r.rank is not None for r in self.rows) / len(self.rows) if self.rows else 0.0

    @property
    def mrr(self) -> float:
        return sum(1.0 / r.rank for r in self.rows if r.rank) / len(self.rows) if self.rows else 0.0

    def of_kind(self, kind: str) -> EvalResult:
        return replace(self, rows=tuple(r for r in self.rows if r.kind == kind))


def bundled_questions() -> list[EvalQuestion]:
    """The question set for the sample corpus (playground/rag/data/sample_questions.json)."""
    raw = resources.files("playground.rag").joinpath("data/sample_questions.json").read_text("utf-8")
    return parse_questions(raw, "sample_questions.json")


def parse_questions(text: str, name: str = "questions") -> list[EvalQuestion]:
    """Questions from JSON (a list of {question, source(s), kind}), CSV (question,source[,kind]) or
    lines ``question | source[; other source]``. InputError with the line at fault."""
    text = (text or "").strip()
    if not text:
        raise InputError(f"{name} holds no questions.")
    out: list[EvalQuestion] = []
    if text[0] in "[{":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{name} is not valid JSON: {exc}.") from exc
        if isinstance(data, dict):
            data = data.get("questions", [])
        for i, item in enumerate(data, start=1):
            if not isinstance(item, dict) or not str(item.get("question", "")).strip():
                raise InputError(f"{name}: item {i} has no question.")
            src = item.get("sources", item.get("source"))
            srcs = tuple(src) if isinstance(src, list) else tuple(s.strip() for s in str(src or "").split(";") if s.strip())
            if not srcs:
                raise InputError(f"{name}: item {i} ({item['question'][:40]!r}) names no source.")
            out.append(EvalQuestion(str(item["question"]).strip(), srcs, str(item.get("kind", "general"))))
        return out
    first = text.splitlines()[0]
    if "|" not in first and "," in first:
        rows = list(csv.reader(io.StringIO(text)))
        if rows and [c.strip().lower() for c in rows[0][:2]] == ["question", "source"]:
            rows = rows[1:]
        for i, row in enumerate(rows, start=1):
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise InputError(f"{name}: row {i} needs a question and a source, separated by a comma.")
            out.append(EvalQuestion(row[0].strip(), tuple(s.strip() for s in row[1].split(";") if s.strip()),
                                    row[2].strip() if len(row) > 2 and row[2].strip() else "general"))
        return out
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        q, sep, src = line.rpartition("|")
        if not sep or not q.strip() or not src.strip():
            raise InputError(f"{name}: line {i} should read 'question | source', not {line[:60]!r}.")
        out.append(EvalQuestion(q.strip(), tuple(s.strip() for s in src.split(";") if s.strip())))
    return out


def evaluate(client, collection: str, embedder, questions: Sequence[EvalQuestion], settings: RetrievalSettings,
             label: str = "", progress: Progress | None = None) -> EvalResult:
    """recall@k and MRR@k (k = settings.top_k): is an expected source among the top k hits, and how high?"""
    if not questions:
        raise InputError("There are no questions to evaluate.")
    report = progress or _quiet
    s = replace(settings, neighbours=0).check()
    start = time.perf_counter()
    vectors = embed(embedder, [q.question for q in questions])  # (Q, D), one batched pass
    rows: list[EvalRow] = []
    for i, q in enumerate(questions):
        r = retrieve(client, collection, embedder, q.question, s, query_vector=vectors[i], with_ranks=False)
        found = tuple(h.source for h in r.hits)
        rank = next((j for j, src in enumerate(found, start=1) if src in q.sources), None)
        rows.append(EvalRow(q.question, q.sources, q.kind, rank, found))
        report((i + 1) / len(questions), f"{i + 1} / {len(questions)} questions")
    return EvalResult(label or s.label, s.top_k, tuple(rows), time.perf_counter() - start)


# --- the embedding space ---------------------------------------------------------------------

@dataclass(frozen=True)
class Projection:
    """Chunks and the question in the plane of the first two principal components of the chunk vectors."""

    xy: np.ndarray  # (N, 2)
    chunks: tuple[Chunk, ...]
    ids: tuple[str, ...]
    retrieved_rank: tuple[int | None, ...]  # rank of each point among the hits, or None
    query_xy: np.ndarray | None  # (2,)
    explained: tuple[float, float]  # fraction of the variance along each axis
    total_points: int  # points in the collection (N may be a sample of them)


def project(client, collection: str, retrieval: Retrieval | None = None, max_points: int = 4000, seed: int = 0) -> Projection:
    """PCA (scikit-learn) of the collection's dense vectors; a sample of `max_points`, hits always kept."""
    from sklearn.decomposition import PCA

    rows = store.scroll(client, collection, with_vectors=True)
    if len(rows) < 3:
        raise InputError(f"Collection {collection!r} has {len(rows)} point(s); a projection needs at least 3.")
    hit_rank = {h.id: h.rank for h in (retrieval.hits if retrieval else ())}
    total = len(rows)
    if total > max_points:
        rng = np.random.default_rng(seed)
        keep = set(rng.choice(total, size=max_points, replace=False).tolist())
        rows = [r for i, r in enumerate(rows) if i in keep or r[0] in hit_rank]
    vectors = np.stack([v for _, _, v in rows])  # (N, D)
    pca = PCA(n_components=2, random_state=seed).fit(vectors)
    xy = pca.transform(vectors)  # (N, 2)
    q = pca.transform(retrieval.query_vector[None, :])[0] if retrieval is not None else None  # (2,)
    ratio = pca.explained_variance_ratio_
    return Projection(xy, tuple(c for _, c, _ in rows), tuple(i for i, _, _ in rows),
                      tuple(hit_rank.get(i) for i, _, _ in rows), q, (float(ratio[0]), float(ratio[1])), total)


@dataclass(frozen=True)
class ABResult:
    """Two setups on one question: what each retrieved and how much they agree (answers are streamed apart)."""

    a: Setup
    b: Setup
    ra: Retrieval
    rb: Retrieval
    overlap: Overlap


def compare(client, embedders: tuple[Any, Any], question: str, a: Setup, b: Setup) -> ABResult:
    """Retrieve `question` under setups A and B (each from its own collection) and measure the overlap."""
    ra = retrieve(client, a.index.collection, embedders[0], question, a.retrieval)
    rb = retrieve(client, b.index.collection, embedders[1], question, b.retrieval)
    return ABResult(a, b, ra, rb, overlap(ra, rb))
