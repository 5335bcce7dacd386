"""The RAG builder's sections, top to bottom, each a function that draws its part and returns what it made.

views/rag.py calls them in order: `start` (state and link), `intro`, `saved_setups`, `documents`,
`chunking`, `store`, `indexing`, `collections`, `retrieval`, `answer`, `embedding_space`, `ab`,
`evaluation`, `finish`. The logic lives in the core (playground/rag/: pipeline, setups, store,
workspace); the drawing of chunks, passages and charts in components/rag.py. Each text box states the
most characters it accepts (`workspace.TEXT_LIMITS`) and a longer text is refused with the numbers,
the text itself left where it is.

Nothing is replaced without asking: saving under a taken name, deleting a setup and indexing a
source name that holds other text each show a confirmation with its own button; the core refuses
the same things unless told to (`setups.save(overwrite=)`, `pipeline.index(replace=)`). The Qdrant
URL and API key never appear in a message: every error goes through `errors.describe`, which masks
them.

What it leaves out: the routing, the shared sidebar and the error boundary (app.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import streamlit as st

from components import answer_tokens, cache, special_tokens, state
from components import rag as view
from components.models import require
from components.pickers import default_generator, generators, label
from playground import answers, links
from playground.answers import origin_of as answer_origin
from playground.errors import PlaygroundError, WouldReplaceError, describe
from playground.generate import GenerationSettings
from playground.links import Link
from playground.options import bounds, check_text
from playground.rag import documents as docs_core
from playground.rag import setups as setups_core
from playground.rag import store as store_core
from playground.rag import workspace
from playground.rag.chunking import DEFAULTS as CHUNK_DEFAULTS
from playground.rag.chunking import METHODS as CHUNK_METHODS
from playground.rag.chunking import ChunkSettings, split
from playground.rag.embedding import max_tokens
from playground.rag.pipeline import (
    CUT_RULE,
    DEFAULT_TEMPLATE,
    Answer,
    EvalQuestion,
    IndexSpec,
    PromptPlan,
    Setup,
    ask,
    build_prompt,
    bundled_questions,
    compare,
    evaluate,
    finish as finish_answer,
    parse_questions,
    project,
)
from playground.rag.retrieval import METHODS as RETRIEVAL_METHODS
from playground.rag.retrieval import Retrieval, RetrievalSettings, retrieve
from playground.registry import DEFAULT_EMBEDDER
from playground.secrets import redact

LIMITS = workspace.TEXT_LIMITS


class K:
    docs_mode = "rag_docs_mode"
    topics_mode = "rag_topics_mode"
    topics = "rag_topics"
    topics_text = "rag_topics_text"  # the picked topics, comma-joined, for the URL
    uploads = "rag_uploads"
    paste_name = "rag_paste_name"
    paste_text = "rag_paste_text"
    chunk_method = "rag_chunk_method"
    chunk_size = "rag_chunk_size"
    chunk_overlap = "rag_chunk_overlap"
    percentile = "rag_percentile"
    view_doc = "rag_view_doc"
    embedder = "rag_embedder"
    distance = "rag_distance"
    store_mode = "rag_store_mode"
    url = "rag_url"
    api_key = "rag_api_key"
    index = "rag_index"
    index_report = "rag_index_report"
    index_ask = "rag_index_ask"  # (collection, message): indexing would replace text; asking first
    index_replace = "rag_index_replace"
    index_keep = "rag_index_keep"
    index_stop = "rag_index_stop"
    index_run = "rag_index_run"  # where a running indexing is (collection, file i of n): what a stop left says
    replace_ok = "rag_replace_ok"  # the documents' fingerprint whose replacing was confirmed
    chunks_memo = "rag_chunks_memo"
    question = "rag_question"
    plain = "rag_plain"  # special tokens typed in the question or the template go as plain text
    answer_plain = "rag_answer_plain"  # whether the answer shown was generated that way
    ab_shade = "rag_ab_shade"
    answer_shade = "rag_answer_shade"  # the uncertainty shading of the answer's tokens
    method = "rag_method"
    top_k = "rag_top_k"
    threshold = "rag_threshold"
    neighbours = "rag_neighbours"
    sources = "rag_sources"
    show_space = "rag_show_space"
    generator = "rag_generator"
    template = "rag_template"
    max_new = "rag_max_new"
    window = "rag_window"
    answer = "rag_answer"
    answer_result = "rag_answer_result"
    b_method = "rag_b_method"
    b_top_k = "rag_b_top_k"
    b_chunk_method = "rag_b_chunk_method"
    b_chunk_size = "rag_b_chunk_size"
    b_chunk_overlap = "rag_b_chunk_overlap"
    b_neighbours = "rag_b_neighbours"
    ab_answers = "rag_ab_answers"
    ab_run = "rag_ab_run"
    ab_result = "rag_ab_result"
    eval_source = "rag_eval_source"
    eval_text = "rag_eval_text"
    eval_file = "rag_eval_file"
    eval_k = "rag_eval_k"
    eval_run = "rag_eval_run"
    eval_result = "rag_eval_result"
    setup_name = "rag_setup_name"
    setup_save = "rag_setup_save"
    setup_pick = "rag_setup_pick"
    setup_load = "rag_setup_load"
    setup_delete = "rag_setup_delete"
    setup_ask = "rag_setup_ask"  # ("save" | "delete", name): asking before replacing or deleting
    setup_confirm = "rag_setup_confirm"
    setup_cancel = "rag_setup_cancel"
    setup_error = "rag_setup_error"
    message = "rag_message"


SAMPLE, UPLOAD, PASTE = "Sample corpus", "Upload files", "Paste text"
ALL_TOPICS, SOME_TOPICS = "All topics", "Choose topics"
LOCAL, SERVER = "Local (embedded, on disk)", "Qdrant server / cluster"
QDRANT_URL_ENV, QDRANT_KEY_ENV = "QDRANT_URL", "QDRANT_API_KEY"  # a Qdrant server for the whole app
BUNDLED_SET, TYPED_SET, UPLOADED_SET = "Bundled set (sample corpus)", "Type questions", "Upload a file"
DEFAULT_QUESTION = "What happens to assert statements when Python runs with optimization enabled?"
DEFAULT_TOPICS = ["assert", "break", "class", "for", "global", "nonlocal", "pass", "raise", "return", "try", "while",
                  "with", "yield"]
EXAMPLE_QUESTIONS = "What does the pass statement do? | pass\nHow do I declare a module-level variable in a function? | global"
EVAL_K_MAX = 20

ss = st.session_state


def fail(exc: BaseException) -> None:
    """Show an error; the typed API key and URL credentials never appear in it."""
    st.error(describe(exc, secrets=(ss.get(K.api_key),)))


def limit_help(name: str, text: str = "") -> str:
    return f"{text + ' ' if text else ''}At most {LIMITS[name]:,} characters."


def checked(name: str, what: str) -> str | None:
    """The text of box `name`, or None after saying it is over its limit (the text stays in the box)."""
    try:
        return check_text(ss[K.__dict__[name]], LIMITS[name], what)
    except PlaygroundError as exc:
        fail(exc)
        return None


# --- state and link ---------------------------------------------------------------------------------


@dataclass
class Catalogue:
    generators: list[str]
    embedders: list[str]


def links_of(cat: Catalogue) -> dict[str, Link]:
    rb = lambda n: links.Number.of(RetrievalSettings, n)  # noqa: E731
    cb = lambda n: links.Number.of(ChunkSettings, n)  # noqa: E731
    methods, chunkers = links.Choice(tuple(RETRIEVAL_METHODS)), links.Choice(tuple(CHUNK_METHODS))
    return {
        K.docs_mode: Link("docs", links.Choice((SAMPLE, UPLOAD, PASTE))),
        K.topics_mode: Link("topics_mode", links.Choice((ALL_TOPICS, SOME_TOPICS))),
        K.topics_text: Link("topics", links.Text()),
        K.chunk_method: Link("chunker", chunkers), K.chunk_size: Link("size", cb("size")),
        K.chunk_overlap: Link("overlap", cb("overlap")),
        K.embedder: Link("embedder", links.Choice(tuple(cat.embedders))),
        K.distance: Link("distance", links.Choice(tuple(store_core.DISTANCES))),
        K.question: Link("q", links.Text(LIMITS["question"])), K.method: Link("method", methods),
        K.top_k: Link("k", rb("top_k")), K.threshold: Link("threshold", rb("score_threshold")),
        K.neighbours: Link("neighbours", rb("neighbours")),
        K.generator: Link("answer_model", links.Model("generate")),
        K.max_new: Link("max_new", links.Number.of(Setup, "max_new_tokens")),
        K.b_method: Link("b_method", methods), K.b_top_k: Link("b_k", rb("top_k")),
        K.b_chunk_method: Link("b_chunker", chunkers), K.b_chunk_size: Link("b_size", cb("size")),
        K.b_chunk_overlap: Link("b_overlap", cb("overlap")),
    }


def start() -> tuple[Catalogue, dict[str, Link]]:
    """Set every key once (from the link, checked, else the defaults); the models the pickers offer."""
    cat = Catalogue(generators(), workspace.available_embedders())
    url = links_of(cat)
    recursive = CHUNK_DEFAULTS["recursive"]
    state.init({
        K.docs_mode: SAMPLE, K.topics_mode: ALL_TOPICS, K.topics_text: ",".join(DEFAULT_TOPICS), K.paste_name: "notes",
        K.paste_text: "", K.chunk_method: "recursive", K.chunk_size: recursive[0], K.chunk_overlap: recursive[1],
        K.percentile: 95, K.embedder: DEFAULT_EMBEDDER, K.distance: "cosine", K.store_mode: LOCAL, K.url: "",
        K.api_key: "", K.question: DEFAULT_QUESTION, K.method: "dense", K.top_k: 5, K.threshold: 0.0,
        K.neighbours: 0, K.show_space: True, K.generator: default_generator(), K.template: DEFAULT_TEMPLATE,
        K.max_new: 96, K.b_method: "hybrid", K.b_top_k: 5, K.b_chunk_method: "recursive",
        K.b_chunk_size: recursive[0], K.b_chunk_overlap: recursive[1], K.b_neighbours: 0, K.ab_answers: True,
        K.eval_source: BUNDLED_SET, K.eval_text: EXAMPLE_QUESTIONS, K.eval_k: 5, K.setup_name: "",
    }, url)
    state.keep(K.topics)
    if K.topics not in ss:
        wanted = [t.strip() for t in ss[K.topics_text].split(",") if t.strip()]
        known = docs_core.sample_topics()
        unknown = [t for t in wanted if t not in known]
        if unknown:
            st.warning(f"The link asked for the topic(s) {', '.join(map(repr, unknown[:8]))}, which the sample corpus "
                       f"does not have; {'the others are loaded' if len(unknown) < len(wanted) else 'the default topics are loaded'}.")
        ss[K.topics] = [t for t in wanted if t in known] or DEFAULT_TOPICS
    if ss[K.generator] not in cat.generators:
        cat.generators.append(ss[K.generator])  # a Hub model from the link: checked, loaded when used
    return cat, url


def intro() -> None:
    st.title("RAG builder")
    st.write(
        "Build a retrieval-augmented generation pipeline step by step and look at every step: how the documents are "
        "cut into chunks, where the chunks sit in embedding space, which chunks a question retrieves and why, the exact "
        "prompt the model receives, and an answer that cites its sources. Then change one setting and compare."
    )
    with st.expander("How to read this"):
        st.markdown(
            "- **Chunks** are drawn over their document, one colour each; **amber** is text two chunks share (the overlap), "
            "grey is whitespace no chunk kept. Hover a span for its chunk. The histogram counts chunk lengths in tokens of the "
            "embedding model; the red line is where the embedder stops reading (a longer chunk is embedded from its start only).\n"
            "- **Qdrant** keeps one collection per setup, named from it (embedder, chunking, distance). Point ids are hashes of "
            "the chunk's content, so indexing the same documents again embeds and writes nothing. Indexing a source name "
            "that already holds other text asks first: it would replace that text.\n"
            "- **Dense** retrieval compares embeddings (cosine similarity: 1 is identical). **Sparse** is BM25: term "
            "frequencies in each chunk, with Qdrant's IDF modifier weighting rare words up; it finds exact identifiers "
            "such as `__debug__`. **Hybrid** asks both and fuses the two rankings with reciprocal rank fusion "
            "(score = Σ 1/(rank+1)), so its scores are small numbers about ranks, not similarities. Each passage shows its "
            "rank under all three methods; the question's words are highlighted.\n"
            "- **Embedding space**: the chunks projected on their two main directions of variation (PCA). Close points say "
            "similar things; the red star is the question, ringed points were retrieved. Two dimensions keep only part of "
            "the picture (the title says how much of the variance).\n"
            "- **The prompt** is shown exactly as the model reads it, chat template included, with its token count against "
            f"the context window. {CUT_RULE}\n"
            "- **Citations**: [1], [2] in the answer link to the passages. A small model cites loosely: check the links.\n"
            "- **A/B**: setup B differs from A in what you change; passages both setups found are marked green. "
            "**Evaluation** asks a set of questions whose right source is known: *recall@k* is how often a right source is "
            "in the top k, *MRR* the mean of 1/rank of the first right one (1.0 = always first).\n"
            "- Try: the keyword question *What does __suppress_context__ do?* under dense, then hybrid; chunk size 250 vs 1000 "
            "in A/B; a context window of 600 tokens to see passages cut."
        )
    view.css()
    if ss.get(K.message):
        st.success(ss.pop(K.message))


# --- saved setups ------------------------------------------------------------------------------------


def current_setup() -> Setup:
    g = ss
    chunking = ChunkSettings(g[K.chunk_method], int(g[K.chunk_size]), int(g[K.chunk_overlap]), int(g[K.percentile]))
    return Setup(
        index=IndexSpec(g[K.embedder], chunking, g[K.distance]),
        retrieval=RetrievalSettings(g[K.method], int(g[K.top_k]), float(g[K.threshold]), int(g[K.neighbours]),
                                    tuple(g.get(K.sources) or ())),
        generator=g[K.generator], template=g[K.template], max_new_tokens=int(g[K.max_new]),
    )


def apply_setup(s: Setup) -> None:
    c = s.index.chunking
    ss[K.chunk_method], ss[K.chunk_size], ss[K.chunk_overlap], ss[K.percentile] = (c.method, c.size, c.overlap,
                                                                                   c.breakpoint_percentile)
    ss[K.embedder], ss[K.distance] = s.index.embedder, s.index.distance
    r = s.retrieval
    ss[K.method], ss[K.top_k], ss[K.threshold], ss[K.neighbours] = r.method, r.top_k, r.score_threshold, r.neighbours
    ss[K.sources] = list(r.sources)
    ss[K.generator], ss[K.template], ss[K.max_new] = s.generator, s.template, s.max_new_tokens


def _setup_error(exc: PlaygroundError) -> None:
    ss[K.setup_error] = describe(exc)


def _save(overwrite: bool = False) -> None:
    ss.pop(K.setup_ask, None)
    try:
        name = check_text(ss[K.setup_name], LIMITS["setup_name"], "The setup name")
        saved = setups_core.save(name, current_setup(), overwrite=overwrite)
        ss[K.message] = f"{'Replaced' if overwrite else 'Saved'} the setup {saved.name!r}."
    except WouldReplaceError:
        ss[K.setup_ask] = ("save", ss[K.setup_name].strip())
    except PlaygroundError as exc:
        _setup_error(exc)


def _load() -> None:
    try:
        saved = setups_core.load(ss[K.setup_pick])
        apply_setup(saved.setup)
        ss[K.setup_name] = saved.name
        ss[K.message] = f"Loaded the setup {saved.name!r}."
    except PlaygroundError as exc:
        _setup_error(exc)


def _ask_delete() -> None:
    ss[K.setup_ask] = ("delete", ss[K.setup_pick])


def _confirm() -> None:
    how, name = ss.pop(K.setup_ask)
    if how == "save":
        _save(overwrite=True)
        return
    try:
        setups_core.delete(name)
        ss[K.message] = f"Deleted the setup {name!r}."
    except PlaygroundError as exc:
        _setup_error(exc)


def _cancel() -> None:
    ss.pop(K.setup_ask, None)


def saved_setups() -> list[setups_core.SavedSetup]:
    """Save, load and delete named setups; replacing or deleting one asks first. Returns the saved ones."""
    with st.expander("Saved setups", icon=":material/bookmarks:", expanded=bool(ss.get(K.setup_ask))):
        st.caption("A setup is every choice below (chunking, embedder, distance, retrieval, model, template). "
                   f"Saved in {setups_core.where()}: they survive a restart.")
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        c1.text_input("Name", key=K.setup_name, placeholder="e.g. hybrid, 500 characters",
                      help=limit_help("setup_name"))
        c2.button("Save this setup", key=K.setup_save, on_click=_save, icon=":material/save:")
        asking = ss.get(K.setup_ask)
        if asking:
            how, name = asking
            st.warning(f"A setup named {name!r} is already saved: replace it with this one?" if how == "save" else
                       f"Delete the saved setup {name!r}? It cannot be brought back.", icon=":material/help:")
            b1, b2, _ = st.columns([1, 1, 3])
            b1.button("Replace it" if how == "save" else "Yes, delete it", key=K.setup_confirm, on_click=_confirm,
                      type="primary")
            b2.button("Cancel", key=K.setup_cancel, on_click=_cancel)
        try:
            saved_list = setups_core.list_saved()
        except PlaygroundError as exc:
            saved_list = []
            fail(exc)
        if saved_list:
            names = [s.name for s in saved_list]
            if ss.get(K.setup_pick) not in names:
                ss[K.setup_pick] = names[0]
            c1, c2, c3 = st.columns([3, 1, 1], vertical_alignment="bottom")
            c1.selectbox("Saved", names, key=K.setup_pick)
            c2.button("Load", key=K.setup_load, on_click=_load, icon=":material/upload:")
            c3.button("Delete", key=K.setup_delete, on_click=_ask_delete, icon=":material/delete:")
            st.dataframe([{"name": s.name, "setup": s.setup.label, "answers with": s.setup.generator} for s in saved_list],
                         hide_index=True)
        else:
            st.caption("No saved setup yet.")
        if ss.get(K.setup_error):
            st.error(ss.pop(K.setup_error))
    return saved_list


# --- 1. documents ------------------------------------------------------------------------------------


def uploaded_documents(files: list[tuple[str, bytes]]) -> tuple[list[docs_core.Document], list[str]]:
    """The documents of uploaded files, a .zip opened into its files (folders kept in the names);
    and, for each file or .zip that could not be read, why (the others go on)."""
    from playground.rag.ingest import files_from_zip

    docs: list[docs_core.Document] = []
    skipped: list[str] = []
    for name, data in files:
        try:
            inner = files_from_zip(data, name) if name.lower().endswith(".zip") else [(name, data)]
        except PlaygroundError as exc:
            skipped.append(describe(exc))
            continue
        for fname, fdata in inner:
            try:
                doc = docs_core.load_bytes(fname, fdata)
            except PlaygroundError as exc:
                why, base = describe(exc), fname.rsplit("/", 1)[-1]
                skipped.append(fname + why[len(base):] if base != fname and why.startswith(base) else why)
                continue
            docs.append(doc if doc.source == fname else docs_core.Document(fname, doc.text, doc.kind, doc.pages))
    return docs_core.unique_sources(docs), skipped


def documents() -> list[docs_core.Document]:
    """The documents to index (sample topics, uploads or pasted text); stops the page when there are none."""
    st.header("1 · Documents", divider="gray")
    st.radio("Where the documents come from", [SAMPLE, UPLOAD, PASTE], key=K.docs_mode, horizontal=True)
    mode = ss[K.docs_mode]
    docs: list[docs_core.Document] = []
    if mode == SAMPLE:
        st.caption("Python's own language reference, which every Python install ships as `pydoc_data.topics`: "
                   f"one document per topic ({len(docs_core.sample_topics())} topics).")
        st.radio("Topics", [ALL_TOPICS, SOME_TOPICS], key=K.topics_mode, horizontal=True,
                 help="All topics take a minute or so to embed on a CPU; a few topics take seconds.")
        if ss[K.topics_mode] == SOME_TOPICS:
            st.multiselect("Topics to load", docs_core.sample_topics(), key=K.topics)
            ss[K.topics_text] = ",".join(ss[K.topics])
            docs = docs_core.sample_corpus(ss[K.topics])
        else:
            docs = docs_core.sample_corpus()
    elif mode == UPLOAD:
        files = st.file_uploader("Files, or a .zip of them (txt, md, pdf, html; up to 50 MB an upload)",
                                 type=["txt", "md", "markdown", "pdf", "html", "htm", "zip"],
                                 accept_multiple_files=True, key=K.uploads,
                                 help="Pick many files at once, or one .zip of a folder: its folders stay in the "
                                      "source names (docs/intro.md). A file that cannot be read is named and skipped.")
        docs, skipped = uploaded_documents([(f.name, f.getvalue()) for f in files or []])
        if skipped:
            st.warning(f"{len(skipped):,} file(s) skipped; the others are used:\n\n"
                       + "\n".join(f"- {m}" for m in skipped[:20])
                       + (f"\n- … and {len(skipped) - 20:,} more" if len(skipped) > 20 else ""), icon=":material/warning:")
    else:
        c1, c2 = st.columns([1, 4])
        c1.text_input("Name", key=K.paste_name, help=limit_help("paste_name", "The source name passages cite."))
        c2.text_area("Text", key=K.paste_text, height=160, placeholder="Paste any text to index",
                     help=limit_help("paste_text"))
        name, text = checked("paste_name", "The name"), checked("paste_text", "The pasted text")
        if name is not None and text is not None and text.strip():
            try:
                docs = [docs_core.from_text(name, text)]
            except PlaygroundError as exc:
                fail(exc)
    if not docs:
        st.info({SAMPLE: "Pick at least one topic.", UPLOAD: "Upload one or more files (txt, md, pdf, html) to index them.",
                 PASTE: "Paste some text to index it."}[mode])
        st.stop()
    c1, c2, c3 = st.columns(3)
    c1.metric("Documents", f"{len(docs):,}")
    c2.metric("Characters", f"{sum(d.chars for d in docs):,}")
    c3.metric("Largest", f"{max(docs, key=lambda d: d.chars).source}")
    return docs


# --- 2. chunking -------------------------------------------------------------------------------------


def _on_method_change(method_key: str, size_key: str, overlap_key: str) -> None:
    """A new splitter gets its own sensible size and overlap (characters vs tokens)."""
    size, overlap = CHUNK_DEFAULTS[ss[method_key]]
    ss[size_key] = size
    ss[overlap_key] = overlap


def chunk_widgets(keys: tuple[str, str, str], container, percentile_key: str | None = None) -> ChunkSettings:
    method_key, size_key, overlap_key = keys
    state.redraw(method_key, size_key, overlap_key)
    b_size, b_overlap = bounds(ChunkSettings, "size"), bounds(ChunkSettings, "overlap")
    c1, c2, c3 = container.columns([2, 1, 1])
    c1.selectbox("Splitter", list(CHUNK_METHODS), key=method_key, format_func=CHUNK_METHODS.get,
                 on_change=_on_method_change, args=(method_key, size_key, overlap_key))
    unit = ChunkSettings(method=ss[method_key]).unit
    c2.number_input(f"Size ({unit})", int(b_size.lo), int(b_size.hi), step=10, key=size_key, help=b_size.help)
    semantic = ss[method_key] == "semantic"
    c3.number_input(f"Overlap ({unit})", int(b_overlap.lo), int(b_overlap.hi), step=5, key=overlap_key,
                    help=b_overlap.help, disabled=semantic)
    if semantic and percentile_key:
        b = bounds(ChunkSettings, "breakpoint_percentile")
        container.slider("Breakpoint percentile", int(b.lo), int(b.hi), key=percentile_key, help=b.help)
    return ChunkSettings(ss[method_key], int(ss[size_key]), int(ss[overlap_key]), int(ss[K.percentile]))


def get_chunks(docs: list[docs_core.Document], settings: ChunkSettings, emb_id: str):
    """Chunks of `docs`, remembered in the session for the same documents, settings and embedder."""
    memo = ss.get(K.chunks_memo)
    if not isinstance(memo, workspace.ChunkMemo):
        memo = ss[K.chunks_memo] = workspace.ChunkMemo()

    def make():
        tok = cache.tokenizer(emb_id)
        model = cache.embedder(emb_id) if settings.method == "semantic" else None
        if settings.method == "semantic" or len(docs) > 20:
            bar = st.progress(0.0, text="Chunking…")
            chunks = split(docs, settings, tok, model, progress=lambda f, m: bar.progress(min(f, 1.0), text=m))
            bar.empty()
            return chunks
        return split(docs, settings, tok, model)

    return memo.get(docs, settings, emb_id, make)


@dataclass
class Chunked:
    setup: Setup
    chunks: list
    embedder: Any  # the loaded sentence embedder


def chunking(docs: list[docs_core.Document]) -> Chunked:
    """Chunk settings, the chunks with their lengths, and one document drawn with its chunks."""
    st.header("2 · Chunking", divider="gray")
    chunk_widgets((K.chunk_method, K.chunk_size, K.chunk_overlap), st.container(), K.percentile)
    setup = current_setup()
    try:
        setup.index.check()
        chunks = get_chunks(docs, setup.index.chunking, setup.index.embedder)
        emb_model = cache.embedder(setup.index.embedder)
    except Exception as exc:  # noqa: BLE001 - shown, never a traceback
        fail(exc)
        st.stop()
    limit = max_tokens(emb_model)
    over = sum(c.tokens > limit for c in chunks)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Chunks", f"{len(chunks):,}")
    c2.metric("Mean length", f"{sum(c.tokens for c in chunks) / max(len(chunks), 1):.0f} tokens")
    c3.metric("Longest", f"{max((c.tokens for c in chunks), default=0):,} tokens")
    c4.metric(f"Over {limit} tokens", f"{over:,}", help="Chunks longer than the embedder reads: their end is not embedded.")
    left, right = st.columns([3, 2])
    with right:
        st.plotly_chart(view.length_histogram(chunks, limit, setup.index.chunking.size, setup.index.chunking.unit),
                        key="rag_hist")
    with left:
        sources = [d.source for d in docs]
        if ss.get(K.view_doc) not in sources:
            ss[K.view_doc] = sources[0]
        st.selectbox("Document to look at", sources, key=K.view_doc)
        doc = next(d for d in docs if d.source == ss[K.view_doc])
        mine = [c for c in chunks if c.source == doc.source]
        st.caption(f"{doc.source}: {doc.chars:,} characters in {len(mine)} chunk(s). Numbers mark where each chunk starts.")
        with st.container(height=320):
            st.html(view.chunk_spans_html(doc.text, mine))
    return Chunked(setup, chunks, emb_model)


# --- 3. embedding and the index --------------------------------------------------------------------------


@dataclass
class Store:
    client: Any
    lock: Any
    url: str  # "" for the local store
    where: str  # as messages show it: credentials masked


def store(cat: Catalogue) -> Store:
    """Embedder, distance and where the vectors live; the connected store (stops when it cannot connect)."""
    st.header("3 · Embed and index in Qdrant", divider="gray")
    c1, c2, c3 = st.columns([2, 1, 2])
    c1.selectbox("Embedding model", cat.embedders, key=K.embedder, format_func=label,
                 help="Any sentence-transformers model in the catalogue: the bundled MiniLM, or a downloaded Hub model.")
    c2.selectbox("Distance", list(store_core.DISTANCES), key=K.distance,
                 help="cosine: angle between vectors; dot: dot product (= cosine for normalised vectors); "
                      "euclid: straight-line distance (lower is closer).")
    url = key = ""
    team_url = (os.environ.get(QDRANT_URL_ENV) or "").strip()
    if team_url:  # set for the whole app (several app processes share one Qdrant): no local store offered
        url, key = team_url, (os.environ.get(QDRANT_KEY_ENV) or "").strip()
        c3.markdown(f"**Store:** the team's Qdrant server (`{QDRANT_URL_ENV}`)",
                    help=f"Every session of this app keeps its collections on the Qdrant server that {QDRANT_URL_ENV} "
                         f"names ({QDRANT_KEY_ENV} holds its key), so several app processes share them. "
                         "Unset it to use the embedded store.")
    else:
        c3.radio("Store", [LOCAL, SERVER], key=K.store_mode, horizontal=True)
    if not team_url and ss[K.store_mode] == SERVER:
        c1, c2 = st.columns([2, 1])
        c1.text_input("Qdrant URL", key=K.url, placeholder="http://localhost:6333", help=limit_help("url"))
        c2.text_input("API key", key=K.api_key, type="password",
                      help=limit_help("api_key", "Leave empty for a server without authentication. Never put in a "
                                                 "link or a message."))
        url, key = checked("url", "The Qdrant URL"), checked("api_key", "The API key")
        if url is None or key is None:
            st.stop()
        url = url.strip()
        if not url:
            st.info("Type the URL of a Qdrant server or cluster, or pick the local store.")
            st.stop()
    try:
        client, lock = cache.qdrant(url, key if url else "")
    except PlaygroundError as exc:
        if team_url:
            st.error(f"{describe(exc)} This is the server {QDRANT_URL_ENV} names for this app: start it (or correct "
                     f"{QDRANT_URL_ENV} and restart the app), or unset {QDRANT_URL_ENV} to use the embedded store. "
                     "Your documents and settings above are kept.", icon=":material/error:")
        else:
            fail(exc)
        st.stop()
    return Store(client, lock, url, (redact(url, secrets=[key]) + (f" ({QDRANT_URL_ENV})" if team_url else ""))
                 if url else "the local store")


def run_index(db: Store, spec: IndexSpec, docs, chunk_list, title: str, replace_text: bool = False):
    """Index with progress per file and overall, and a Stop button; the report, or None after saying
    why (a replace to confirm, an error, or a stop).

    Chunks go through playground.rag.ingest in batches: a stop (or any click that reruns the page)
    keeps every batch written, and the next Index embeds only what is missing (ids are content hashes).
    """
    from playground.rag.ingest import ingest_chunks
    from playground.rag.pipeline import IndexReport, replaced, replace_message

    model = cache.embedder(spec.embedder)
    try:
        with db.lock:
            gone = replaced(db.client, spec.collection, chunk_list)
            existed = store_core.exists(db.client, spec.collection)
    except PlaygroundError as exc:
        fail(exc)
        return None
    if gone and not replace_text:
        ss[K.index_ask] = (spec.collection, replace_message(spec.collection, gone))
        return None
    groups: dict[str, list] = {}
    for c in chunk_list:
        groups.setdefault(c.source, []).append(c)
    with st.status(title, expanded=True) as status:
        st.button("Stop indexing", key=K.index_stop, icon=":material/stop_circle:",
                  help="What is written stays: Index again goes on where it stopped, embedding only what is missing.")
        overall_bar = st.progress(0.0, text="starting…")
        file_bar = st.progress(0.0, text="")
        run = ss[K.index_run] = {"collection": spec.collection, "files": len(groups), "file": 0, "name": "",
                                 "chunks": len(chunk_list)}

        def on_file(p) -> None:
            run.update(file=p.index + 1, name=p.name)
            file_bar.progress(min(p.done / p.chunks, 1.0) if p.chunks else 0.0,
                              text=f"{p.name}: {p.done:,} of {p.chunks:,} chunks" + (f" ({p.status})" if p.status != "embedding" else ""))

        try:
            with db.lock:
                rep = ingest_chunks(db.client, list(groups.items()), spec, model, replace=replace_text,
                                    on_file=on_file, on_overall=lambda f, m: overall_bar.progress(min(f, 1.0), text=m))
        except PlaygroundError as exc:
            ss.pop(K.index_run, None)
            status.update(label="Indexing failed: what was indexed before is untouched", state="error")
            fail(exc)
            return None
        ss.pop(K.index_run, None)
        failed = rep.failed
        for f in failed[:10]:
            st.error(f"{f.name}: {f.error}")
        kept = [f for f in rep.files if f.status in ("indexed", "unchanged")]
        report = IndexReport(rep.collection, sum(f.chunks for f in rep.files), rep.added,
                             sum(f.chunks - f.added for f in kept), sum(f.removed for f in rep.files), rep.points,
                             not existed, rep.embed_seconds, rep.seconds)
        status.update(label=(f"Indexed: {report.added:,} added, {report.unchanged:,} unchanged, {report.removed:,} removed "
                             f"in {report.seconds:.1f} s" + (f"; {len(failed):,} file(s) failed" if failed else "")),
                      state="error" if failed else "complete", expanded=bool(failed))
    return report


def _keep_old_text() -> None:
    ss.pop(K.index_ask, None)


def indexing(db: Store, docs, chunked: Chunked) -> workspace.IndexState:
    """The collection's state for these chunks, the Index button, and the question before replacing text."""
    collection = chunked.setup.index.collection
    chunks = chunked.chunks
    try:
        with db.lock:
            now = workspace.index_state(db.client, collection, chunks)
    except PlaygroundError as exc:
        fail(exc)
        st.stop()
    status_line = st.empty()  # filled once indexing (if asked for) is done
    cut_short = ss.pop(K.index_run, None)  # a run that a stop (or another click) ended before it finished
    if cut_short and cut_short["collection"] == collection:
        st.warning(f"Indexing stopped at file {cut_short['file']:,} of {cut_short['files']:,}"
                   + (f" ({cut_short['name']})" if cut_short["name"] else "")
                   + f": {now.have:,} of these {len(chunks):,} chunks are in the collection. Press Index to go on "
                     "where it stopped: what was written is not embedded again.", icon=":material/pause_circle:")
    report = None
    if st.button("Index these chunks" if not now.complete else "Index again (nothing will change)", key=K.index,
                 type="primary" if not now.complete else "secondary", icon=":material/database:"):
        ss.pop(K.index_ask, None)
        report = run_index(db, chunked.setup.index, docs, chunks, f"Indexing {len(chunks):,} chunks into {collection}…")
    asking = ss.get(K.index_ask)
    if asking and asking[0] == collection:
        st.warning(asking[1], icon=":material/help:")
        b1, b2, _ = st.columns([1, 1, 3])
        if b1.button("Replace the old text", key=K.index_replace, type="primary"):
            ss.pop(K.index_ask, None)
            ss[K.replace_ok] = workspace.fingerprint(docs)
            report = run_index(db, chunked.setup.index, docs, chunks, f"Indexing {len(chunks):,} chunks into {collection}…",
                               replace_text=True)
        else:
            b2.button("Keep the old text", key=K.index_keep, on_click=_keep_old_text)
    if report is not None:
        ss[K.index_report] = report
        now = replace(now, exists=True, have=len(chunks), points=report.points)
    status_line.markdown(f"Collection **`{collection}`** in {db.where}: **{now.have:,} of these {len(chunks):,} chunks** "
                         f"are indexed ({now.points:,} points in all).")
    if now.exists:
        index_state(db, collection)
    last = ss.get(K.index_report)
    if last is not None and last.collection == collection:
        st.caption(f"Last indexing: {last.added:,} chunks embedded and written ({last.chunks_per_second:.1f} chunks/s), "
                   f"{last.unchanged:,} already there, {last.removed:,} outdated chunks removed; "
                   f"{last.points:,} points now.")
    return now


def index_state(db: Store, collection: str) -> None:
    """Where the collection's HNSW index stands (embedded store), redrawn every 2 s while it builds;
    searching stays exact meanwhile, so nothing waits for it."""
    def line() -> bool:
        try:
            with db.lock:
                state_now = store_core.index_state(db.client, collection)
        except PlaygroundError as exc:
            st.caption(f"Index state unknown: {describe(exc)}")
            return False
        if state_now is None:
            st.caption("Index: the Qdrant server builds and manages it.")
            return False
        st.caption(f"Index: {state_now.label}.")
        return state_now.building

    try:
        with db.lock:
            building = bool(getattr(store_core.index_state(db.client, collection), "building", False))
    except PlaygroundError:
        building = False
    st.fragment(line, run_every=2.0 if building else None)()


def collections(db: Store) -> None:
    """The collection browser: what each collection holds (sources, chunk counts, embedder, chunking,
    distance, size on disk, index state), the chunks of a source with their payloads, and deleting a
    source or a whole collection, each after its own confirmation (components.collections)."""
    from components.collections import browser

    with st.expander("Collections in this store"):
        browser(db.client, db.lock, key="rag_browse")


# --- 4. retrieval ------------------------------------------------------------------------------------------


@dataclass
class Retrieved:
    setup: Setup  # setup A, with the retrieval settings just picked
    retrieval: Retrieval | None  # None when the question was refused or the store failed
    sources: list[str]  # every source the collection holds


def retrieval(db: Store, chunked: Chunked) -> Retrieved:
    st.header("4 · Retrieve", divider="gray")
    st.text_input("Question", key=K.question, help=limit_help("question"))
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    c1.radio("Retrieval", list(RETRIEVAL_METHODS), key=K.method, format_func=RETRIEVAL_METHODS.get, horizontal=True)
    bk, bt, bn = (bounds(RetrievalSettings, n) for n in ("top_k", "score_threshold", "neighbours"))
    c2.slider("Top-k", int(bk.lo), int(bk.hi), key=K.top_k, help=bk.help)
    c3.number_input("Score threshold", float(bt.lo), float(bt.hi), step=0.05, key=K.threshold,
                    help=bt.help + ". Dense: cosine similarity; sparse: BM25 score; hybrid: RRF score (at most 1).")
    c4.slider("Neighbours", int(bn.lo), int(bn.hi), key=K.neighbours, help=bn.help)
    collection = chunked.setup.index.collection
    with db.lock:
        try:
            all_sources = store_core.sources(db.client, collection)
        except PlaygroundError as exc:
            all_sources = []
            fail(exc)
    ss[K.sources] = [s for s in ss.get(K.sources) or [] if s in all_sources]
    st.multiselect("Only from these sources (empty: all)", all_sources, key=K.sources)
    setup = current_setup()
    found = None
    question = checked("question", "The question")
    if question is not None:
        try:
            with db.lock:
                found = retrieve(db.client, collection, chunked.embedder, question, setup.retrieval)
        except PlaygroundError as exc:
            fail(exc)
    if found is not None:
        st.caption(f"{len(found.hits)} passage(s) in {found.seconds * 1000:.0f} ms · query terms for BM25: "
                   + (", ".join(f"`{t}`" for t in found.query_terms) or "none"))
    return Retrieved(setup, found, all_sources)


# --- 5. the prompt and the answer ----------------------------------------------------------------------------


def stream_answer(lm, plan: PromptPlan, box, prefix: str = "a", name: str = "", plain: bool = False) -> Answer:
    """Stream the model's answer to `plan` into `box` as it comes; the finished Answer."""
    s = ask(lm, plan, plain)
    text = ""
    for piece in s:
        text += piece.text
        box.html(view.answer_html(f"{name + ': ' if name else ''}{text}▌", len(plan.used), prefix))
    return finish_answer(plan, s)


@dataclass
class Answering:
    lm: Any
    plan: PromptPlan | None
    plain: bool = False  # special tokens typed in the question or template go as plain text


def plan_for(lm, template: str, question: str, hits) -> PromptPlan:
    return build_prompt(lm, template, question, hits, GenerationSettings(max_new_tokens=int(ss[K.max_new])),
                        context_window=int(ss[K.window]))


def answer(cat: Catalogue, found: Retrieved) -> Answering:
    """The model, the exact prompt with its token budget, and the streamed answer with citations."""
    st.header("5 · Prompt and answer", divider="gray")
    c1, c2, c3 = st.columns([2, 1, 1])
    c1.selectbox("Model that answers", cat.generators, key=K.generator, format_func=label)
    b_new = bounds(Setup, "max_new_tokens")
    c2.number_input("Tokens for the answer", int(b_new.lo), int(b_new.hi), key=K.max_new, help=b_new.help)
    lm = require(ss[K.generator])
    if K.window not in ss or ss[K.window] > lm.context_length:
        ss[K.window] = lm.context_length
    state.redraw(K.window)  # set here, not by init: drawn for the first time, it must show this value
    c3.number_input("Context window", 64, lm.context_length, step=64, key=K.window,
                    help=f"{lm.spec.name} reads up to {lm.context_length:,} tokens; set it lower to see the cut rule at work.")
    st.text_area("Prompt template (LangChain; {context} and {question} are filled in)", key=K.template, height=130,
                 help=limit_help("template"))
    template = checked("template", "The prompt template")
    typed = {"the question": ss[K.question], "the prompt template": ss[K.template]}
    if found.retrieval is not None:  # a document's text goes into the prompt too
        typed["the retrieved passages"] = "\n".join(h.text for h in found.retrieval.hits)
    plain = special_tokens.check(typed,
                                 {lm.spec.label: lm.tokenizer} if getattr(lm, "tokenizer", None) is not None else {},
                                 K.plain)
    r = found.retrieval
    plan = None
    if r is not None and template is not None:
        try:
            plan = plan_for(lm, template, ss[K.question], r.hits)
        except PlaygroundError as exc:
            fail(exc)
    left, right = st.columns([3, 2])
    with left:
        st.subheader("Retrieved passages")
        if r is not None:
            view.hits(r, "a", dropped=plan.dropped if plan else ())
    with right:
        if plan is not None:
            _prompt_and_answer(lm, plan, plain)
    return Answering(lm, plan, plain)


def _prompt_and_answer(lm, plan: PromptPlan, plain: bool = False) -> None:
    st.subheader("The prompt")
    c1, c2 = st.columns(2)
    c1.metric("Prompt tokens", f"{plan.prompt_tokens:,}", help="Counted with the answering model's tokenizer.")
    c2.metric("Passages in the prompt", f"{len(plan.used)} of {len(plan.used) + len(plan.dropped)}")
    st.plotly_chart(view.budget_figure(plan), key="rag_budget")
    if plan.dropped:
        st.warning(f"{len(plan.dropped)} lowest-ranked passage(s) cut to fit the window. {CUT_RULE}")
    else:
        st.caption(f"Everything fits. {CUT_RULE}")
    with st.expander("The exact prompt the model reads", expanded=False):
        st.code(plan.prompt, language=None, wrap_lines=True)
    pressed = st.button("Answer", key=K.answer, type="primary", icon=":material/play_arrow:")
    box = st.empty()
    if pressed:
        try:
            ss[K.answer_result] = stream_answer(lm, plan, box, "a", plain=plain)
            ss[K.answer_plain] = plain
        except PlaygroundError as exc:
            fail(exc)
    done = ss.get(K.answer_result)
    if done is not None and done.plan.prompt == plan.prompt:
        box.html(view.answer_html(done.text, len(done.plan.used), "a"))
        r = done.result
        st.caption(f"{r.new_tokens} tokens · {r.tokens_per_second:.1f} tokens/s · first token after "
                   f"{r.time_to_first_token:.1f} s · stopped: {r.finish_reason}")
        st.markdown(view.citations_list(done.text, done.plan.used))
        answer_tokens_section(lm, done, ss.get(K.answer_plain, False))
    elif not pressed:
        box.caption("Press Answer to stream the model's answer to this prompt.")


def answer_tokens_section(lm, done: Answer, plain: bool) -> None:
    """The answer token by token: each token's probability and alternatives, a link to Next token where
    that page can rebuild the prompt (a prompt with its passages is usually too long for a link)."""
    r = done.result
    if not r.logprobs:
        return
    with st.expander("The answer token by token", expanded=False):
        shade = answer_tokens.shading_control(K.answer_shade)
        origin = answers.origin_of(lm, done.plan.text, done.plan.settings, done.plan.chat_template, r, plain)
        answer_tokens.show(r.logprobs, r.token_ids, origin, r.text, shade)


def embedding_space(db: Store, chunked: Chunked, found: Retrieved) -> None:
    if found.retrieval is None:
        return
    with st.expander("Embedding space (PCA)", expanded=True):
        st.toggle("Show the chunks and the question in 2D", key=K.show_space)
        if ss[K.show_space]:
            try:
                with db.lock:
                    points = store_core.count(db.client, chunked.setup.index.collection)
                    proj = project(db.client, chunked.setup.index.collection, found.retrieval) if points >= 3 else None
                if proj is None:  # one short text makes one or two chunks: nothing to map yet, and no fault
                    st.info(f"The map of the collection needs at least 3 chunks; it holds {points}. "
                            "Index more text to see it.", icon=":material/info:")
                else:
                    st.plotly_chart(view.pca_figure(proj, found.retrieval.question), key="rag_pca")
            except PlaygroundError as exc:
                fail(exc)


# --- 6. A/B ----------------------------------------------------------------------------------------------


def ensure_indexed(db: Store, setup: Setup, docs, name: str) -> bool:
    """Index `setup`'s collection for the current documents if it lacks any of their chunks."""
    try:
        setup.index.check()
        chunk_list = get_chunks(docs, setup.index.chunking, setup.index.embedder)
        with db.lock:
            lacking = workspace.index_state(db.client, setup.index.collection, chunk_list).have < len(chunk_list)
    except PlaygroundError as exc:
        fail(exc)
        return False
    if not lacking:
        return True
    confirmed = ss.get(K.replace_ok) == workspace.fingerprint(docs)  # replacing was confirmed for these documents
    report = run_index(db, setup.index, docs, chunk_list, f"Indexing setup {name}: {len(chunk_list):,} chunks…",
                       replace_text=confirmed)
    if report is None and ss.get(K.index_ask, ("",))[0] == setup.index.collection:
        st.error(f"Setup {name}: {ss.pop(K.index_ask)[1]} Index setup A (section 3) and confirm there first.")
    return report is not None


def ab(db: Store, docs, chunked: Chunked, found: Retrieved, answering: Answering) -> Setup:
    """Setup B (A with the changes made here), and both setups' passages, and answers, side by side."""
    st.header("6 · A/B: two setups, one question", divider="gray")
    st.caption("Setup A is everything above. Setup B is A with the changes you make here; a different chunking gets "
               "its own collection, indexed when you compare.")
    bk, bn = bounds(RetrievalSettings, "top_k"), bounds(RetrievalSettings, "neighbours")
    c1, c2, c3 = st.columns([2, 1, 1])
    c1.radio("B: retrieval", list(RETRIEVAL_METHODS), key=K.b_method, format_func=RETRIEVAL_METHODS.get, horizontal=True)
    c2.slider("B: top-k", int(bk.lo), int(bk.hi), key=K.b_top_k)
    c3.slider("B: neighbours", int(bn.lo), int(bn.hi), key=K.b_neighbours)
    b_chunking = chunk_widgets((K.b_chunk_method, K.b_chunk_size, K.b_chunk_overlap), st.container())
    setup_a = found.setup
    setup_b = replace(setup_a, index=replace(setup_a.index, chunking=b_chunking),
                      retrieval=replace(setup_a.retrieval, method=ss[K.b_method], top_k=int(ss[K.b_top_k]),
                                        neighbours=int(ss[K.b_neighbours])))
    st.markdown(f"**A:** {setup_a.label}  \n**B:** {setup_b.label}")
    st.toggle("Answer with both", key=K.ab_answers, help="Off: compare the passages only (faster).")
    question = checked("question", "The question") if st.button(
        "Compare A and B", key=K.ab_run, type="primary", icon=":material/compare_arrows:") else None
    if question is not None and ensure_indexed(db, setup_b, docs, "B"):
        try:
            with db.lock:
                result = compare(db.client, (chunked.embedder, chunked.embedder), question, setup_a, setup_b)
            answers: list[Answer | None] = [None, None]
            if ss[K.ab_answers]:
                cols = st.columns(2)
                for i, (r, name) in enumerate(((result.ra, "A"), (result.rb, "B"))):
                    plan = plan_for(answering.lm, setup_a.template, result.ra.question, r.hits)
                    answers[i] = stream_answer(answering.lm, plan, cols[i].empty(), name.lower(), name,
                                               plain=answering.plain)
            ss[K.ab_result] = (result, answers, answering.plain)
        except PlaygroundError as exc:
            fail(exc)
    shown = ss.get(K.ab_result)
    if shown is not None:
        result, answers, plain = shown
        shade = (answer_tokens.shading_control(K.ab_shade)
                 if any(a is not None and a.result.logprobs for a in answers) else "off")
        if result.ra.question != ss[K.question]:
            st.caption(f"Last comparison, for the question {result.ra.question!r}:")
        st.markdown(view.overlap_caption(result.overlap, len(result.ra.hits), len(result.rb.hits)))
        col_a, col_b = st.columns(2)
        for col, name, setup, r, shared, ans in ((col_a, "A", result.a, result.ra, result.overlap.a_shared, answers[0]),
                                                 (col_b, "B", result.b, result.rb, result.overlap.b_shared, answers[1])):
            with col:
                st.subheader(f"Setup {name}")
                st.caption(setup.label)
                if ans is not None:
                    st.html(view.answer_html(ans.text, len(ans.plan.used), name.lower()))
                    st.caption(f"{ans.result.new_tokens} tokens · {len(ans.plan.used)} passages in the prompt · "
                               f"{ans.plan.prompt_tokens:,} prompt tokens")
                    if ans.result.logprobs:
                        with st.expander("The answer token by token"):
                            p = ans.plan
                            answer_tokens.show(ans.result.logprobs, ans.result.token_ids,
                                               answer_origin(answering.lm, p.text, p.settings, p.chat_template,
                                                                      ans.result, plain),
                                               ans.result.text, shade)
                view.hits(r, name.lower(), shared=shared)
    return setup_b


# --- 7. evaluation -----------------------------------------------------------------------------------------


def _questions() -> list[EvalQuestion]:
    try:
        if ss[K.eval_source] == BUNDLED_SET:
            questions = bundled_questions()
            st.caption(f"{len(questions)} questions on the sample corpus, {sum(q.kind == 'keyword' for q in questions)} "
                       "of them hinging on an exact identifier (keyword questions).")
            return questions
        if ss[K.eval_source] == TYPED_SET:
            st.text_area("One per line: question | source (several sources: a; b)", key=K.eval_text, height=100,
                         help=limit_help("eval_text"))
            text = checked("eval_text", "The typed questions")
            return [] if text is None else parse_questions(text, "the typed questions")
        f = st.file_uploader("JSON list of {question, source} or CSV with question,source", type=["json", "csv", "txt"],
                             key=K.eval_file)
        if f is None:
            return []
        from playground.uploads import read_text  # the one reader: encoding, binary content, size

        return parse_questions(read_text(f.getvalue(), f.name, what="a JSON or CSV file of questions"), f.name)
    except PlaygroundError as exc:
        fail(exc)
        return []


def evaluation(db: Store, docs, chunked: Chunked, found: Retrieved, setup_b: Setup) -> None:
    """recall@k and MRR of setups A and B on questions whose right source is known."""
    st.header("7 · Evaluate retrieval", divider="gray")
    st.caption("Questions whose right source is known: recall@k and MRR of setups A and B.")
    st.radio("Questions", [BUNDLED_SET, TYPED_SET, UPLOADED_SET], key=K.eval_source, horizontal=True)
    questions = _questions()
    indexed_sources = set(found.sources)
    answerable = [q for q in questions if set(q.sources) & indexed_sources]
    if questions and len(answerable) < len(questions):
        st.caption(f"{len(questions) - len(answerable)} question(s) name only sources that are not indexed and are left "
                   f"out; {len(answerable)} remain.")
    st.slider("k", 1, EVAL_K_MAX, key=K.eval_k,
              help="A question counts as found when a right source is among the top k passages.")
    if st.button("Evaluate A and B", key=K.eval_run, type="primary", disabled=not answerable, icon=":material/fact_check:"):
        results = []
        if ensure_indexed(db, setup_b, docs, "B"):
            bar = st.progress(0.0, text="Evaluating…")
            try:
                k = int(ss[K.eval_k])
                for i, (name, s) in enumerate((("A", found.setup), ("B", setup_b))):
                    with db.lock:
                        results.append(evaluate(db.client, s.index.collection, chunked.embedder, answerable,
                                                replace(s.retrieval, top_k=k), label=s.label,
                                                progress=lambda f, m, i=i, name=name: bar.progress(
                                                    min((i + f) / 2, 1.0), text=f"setup {name}: {m}")))
                ss[K.eval_result] = results
            except PlaygroundError as exc:
                fail(exc)
            bar.empty()
    results = ss.get(K.eval_result)
    if results:
        st.dataframe(view.eval_table(results), hide_index=True)
        st.plotly_chart(view.eval_figure(results), key="rag_eval_chart")
        with st.expander("Per question"):
            st.dataframe(view.eval_questions(results), hide_index=True)


def finish(url: dict[str, Link]) -> None:
    """Write the view into the link (the store URL and API key never go in it)."""
    state.to_url(url)
