"""RAG builder: documents -> chunks -> embeddings in Qdrant -> retrieved passages -> the exact prompt ->
an answer with citations; then A/B two setups, evaluate them, save them."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import streamlit as st

from components import cache, state
from components.pickers import default_generator, generators, label
from components import rag as view
from components.models import require
from playground import hub
from playground.errors import PlaygroundError, describe
from playground.generate import GenerationSettings
from playground.options import bounds
from playground.rag import documents as docs_core
from playground.rag import setups as setups_core
from playground.rag import store
from playground.rag.chunking import DEFAULTS as CHUNK_DEFAULTS
from playground.rag.chunking import METHODS as CHUNK_METHODS
from playground.rag.chunking import ChunkSettings, split
from playground.rag.embedding import max_tokens
from playground.rag.pipeline import (
    CUT_RULE,
    DEFAULT_TEMPLATE,
    IndexSpec,
    Setup,
    ask,
    build_prompt,
    bundled_questions,
    compare,
    evaluate,
    finish,
    index,
    parse_questions,
    project,
    EvalQuestion,
)
from playground.rag.retrieval import METHODS as RETRIEVAL_METHODS
from playground.rag.retrieval import RetrievalSettings, retrieve
from playground.registry import DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDER, list_models


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
    chunks_memo = "rag_chunks_memo"
    coll_pick = "rag_coll_pick"
    coll_confirm = "rag_coll_confirm"
    coll_delete = "rag_coll_delete"
    question = "rag_question"
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
    message = "rag_message"


SAMPLE, UPLOAD, PASTE = "Sample corpus", "Upload files", "Paste text"
ALL_TOPICS, SOME_TOPICS = "All topics", "Choose topics"
LOCAL, SERVER = "Local (embedded, on disk)", "Qdrant server / cluster"
BUNDLED_SET, TYPED_SET, UPLOADED_SET = "Bundled set (sample corpus)", "Type questions", "Upload a file"
DEFAULT_QUESTION = "What happens to assert statements when Python runs with optimization enabled?"
DEFAULT_TOPICS = ["assert", "break", "class", "for", "global", "nonlocal", "pass", "raise", "return", "try", "while",
                  "with", "yield"]
EXAMPLE_QUESTIONS = "What does the pass statement do? | pass\nHow do I declare a module-level variable in a function? | global"




def embedders() -> list[str]:
    """Bundled sentence embedders, and downloaded Hub models that are sentence-transformers models."""
    ids = [s.id for s in list_models(include_cached_hub=False) if s.can_embed]
    try:
        for repo in hub.cached_hub_models():
            folder = hub.local_snapshot(repo)
            if folder is not None and (folder / "modules.json").is_file():
                ids.append(repo)
    except Exception:  # noqa: BLE001 - an unreadable Hub cache leaves the bundled ones
        pass
    return ids






def on_method_change(method_key: str, size_key: str, overlap_key: str) -> None:
    """A new splitter gets its own sensible size and overlap (characters vs tokens)."""
    size, overlap = CHUNK_DEFAULTS[st.session_state[method_key]]
    st.session_state[size_key] = size
    st.session_state[overlap_key] = overlap


def fail(exc: BaseException) -> None:
    st.error(describe(exc))


# --- state and URL -------------------------------------------------------------------------------

GENERATORS = generators()
EMBEDDERS = embedders()
URL = {K.docs_mode: "docs", K.topics_mode: "topics_mode", K.topics_text: "topics", K.chunk_method: "chunker", K.chunk_size: "size", K.chunk_overlap: "overlap",
       K.embedder: "embedder", K.distance: "distance", K.question: "q", K.method: "method", K.top_k: "k",
       K.threshold: "threshold", K.neighbours: "neighbours", K.generator: "answer_model", K.max_new: "max_new",
       K.b_method: "b_method", K.b_top_k: "b_k", K.b_chunk_method: "b_chunker", K.b_chunk_size: "b_size",
       K.b_chunk_overlap: "b_overlap"}
state.init({
    K.docs_mode: SAMPLE, K.topics_mode: ALL_TOPICS, K.topics_text: ",".join(DEFAULT_TOPICS), K.paste_name: "notes", K.paste_text: "",
    K.chunk_method: "recursive", K.chunk_size: CHUNK_DEFAULTS["recursive"][0], K.chunk_overlap: CHUNK_DEFAULTS["recursive"][1],
    K.percentile: 95, K.embedder: DEFAULT_EMBEDDER, K.distance: "cosine", K.store_mode: LOCAL, K.url: "", K.api_key: "",
    K.question: DEFAULT_QUESTION, K.method: "dense", K.top_k: 5, K.threshold: 0.0, K.neighbours: 0, K.show_space: True,
    K.generator: default_generator(), K.template: DEFAULT_TEMPLATE, K.max_new: 96,
    K.b_method: "hybrid", K.b_top_k: 5, K.b_chunk_method: "recursive", K.b_chunk_size: CHUNK_DEFAULTS["recursive"][0],
    K.b_chunk_overlap: CHUNK_DEFAULTS["recursive"][1], K.b_neighbours: 0, K.ab_answers: True,
    K.eval_source: BUNDLED_SET, K.eval_text: EXAMPLE_QUESTIONS, K.eval_k: 5, K.setup_name: "",
}, URL)
state.keep(K.topics)
if K.topics not in st.session_state:
    wanted = [t.strip() for t in st.session_state[K.topics_text].split(",")]
    st.session_state[K.topics] = [t for t in wanted if t in docs_core.sample_topics()] or DEFAULT_TOPICS
if st.session_state[K.topics_mode] not in (ALL_TOPICS, SOME_TOPICS):
    st.session_state[K.topics_mode] = ALL_TOPICS
for key, options in ((K.docs_mode, [SAMPLE, UPLOAD, PASTE]), (K.chunk_method, list(CHUNK_METHODS)),
                     (K.b_chunk_method, list(CHUNK_METHODS)), (K.method, list(RETRIEVAL_METHODS)),
                     (K.b_method, list(RETRIEVAL_METHODS)), (K.distance, list(store.DISTANCES)),
                     (K.embedder, EMBEDDERS), (K.generator, GENERATORS)):
    if st.session_state[key] not in options:  # e.g. a hand-edited URL
        st.session_state[key] = options[0] if key != K.generator else DEFAULT_CHAT_MODEL
if st.session_state[K.generator] not in GENERATORS:
    GENERATORS.append(st.session_state[K.generator])

# --- page -------------------------------------------------------------------------------------------

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
        "the chunk's content, so indexing the same documents again embeds and writes nothing.\n"
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

if st.session_state.get(K.message):
    st.success(st.session_state.pop(K.message))

# --- saved setups --------------------------------------------------------------------------------


def current_setup() -> Setup:
    g = st.session_state
    chunking = ChunkSettings(g[K.chunk_method], int(g[K.chunk_size]), int(g[K.chunk_overlap]), int(g[K.percentile]))
    return Setup(
        index=IndexSpec(g[K.embedder], chunking, g[K.distance]),
        retrieval=RetrievalSettings(g[K.method], int(g[K.top_k]), float(g[K.threshold]), int(g[K.neighbours]),
                                    tuple(g.get(K.sources) or ())),
        generator=g[K.generator], template=g[K.template], max_new_tokens=int(g[K.max_new]),
    )


def apply_setup(s: Setup) -> None:
    g = st.session_state
    c = s.index.chunking
    g[K.chunk_method], g[K.chunk_size], g[K.chunk_overlap], g[K.percentile] = c.method, c.size, c.overlap, c.breakpoint_percentile
    g[K.embedder], g[K.distance] = s.index.embedder, s.index.distance
    r = s.retrieval
    g[K.method], g[K.top_k], g[K.threshold], g[K.neighbours] = r.method, r.top_k, r.score_threshold, r.neighbours
    g[K.sources] = list(r.sources)
    g[K.generator], g[K.template], g[K.max_new] = s.generator, s.template, s.max_new_tokens


def do_save() -> None:
    try:
        saved = setups_core.save(st.session_state[K.setup_name], current_setup())
        st.session_state[K.message] = f"Saved the setup {saved.name!r}."
    except PlaygroundError as exc:
        st.session_state["rag_setup_error"] = describe(exc)


def do_load() -> None:
    try:
        saved = setups_core.load(st.session_state[K.setup_pick])
        apply_setup(saved.setup)
        st.session_state[K.setup_name] = saved.name
        st.session_state[K.message] = f"Loaded the setup {saved.name!r}."
    except PlaygroundError as exc:
        st.session_state["rag_setup_error"] = describe(exc)


def do_delete_setup() -> None:
    try:
        setups_core.delete(st.session_state[K.setup_pick])
        st.session_state[K.message] = f"Deleted the setup {st.session_state[K.setup_pick]!r}."
    except PlaygroundError as exc:
        st.session_state["rag_setup_error"] = describe(exc)


with st.expander("Saved setups", icon=":material/bookmarks:"):
    st.caption("A setup is every choice below (chunking, embedder, distance, retrieval, model, template). "
               f"Saved in {setups_core.db_path().name} under the data folder: they survive a restart.")
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    c1.text_input("Name", key=K.setup_name, placeholder="e.g. hybrid, 500 characters")
    c2.button("Save this setup", key=K.setup_save, on_click=do_save, icon=":material/save:")
    try:
        saved_list = setups_core.list_saved()
    except PlaygroundError as exc:
        saved_list = []
        fail(exc)
    if saved_list:
        names = [s.name for s in saved_list]
        if st.session_state.get(K.setup_pick) not in names:
            st.session_state[K.setup_pick] = names[0]
        c1, c2, c3 = st.columns([3, 1, 1], vertical_alignment="bottom")
        c1.selectbox("Saved", names, key=K.setup_pick)
        c2.button("Load", key=K.setup_load, on_click=do_load, icon=":material/upload:")
        c3.button("Delete", key=K.setup_delete, on_click=do_delete_setup, icon=":material/delete:")
        st.dataframe([{"name": s.name, "setup": s.setup.label, "answers with": s.setup.generator} for s in saved_list],
                     hide_index=True)
    else:
        st.caption("No saved setup yet.")
    if st.session_state.get("rag_setup_error"):
        st.error(st.session_state.pop("rag_setup_error"))

# --- 1. documents ------------------------------------------------------------------------------------

st.header("1 · Documents", divider="gray")
st.radio("Where the documents come from", [SAMPLE, UPLOAD, PASTE], key=K.docs_mode, horizontal=True)
mode = st.session_state[K.docs_mode]
documents: list[docs_core.Document] = []
if mode == SAMPLE:
    st.caption("Python's own language reference, which every Python install ships as `pydoc_data.topics`: "
               f"one document per topic ({len(docs_core.sample_topics())} topics).")
    st.radio("Topics", [ALL_TOPICS, SOME_TOPICS], key=K.topics_mode, horizontal=True,
             help="All topics take a minute or so to embed on a CPU; a few topics take seconds.")
    if st.session_state[K.topics_mode] == SOME_TOPICS:
        st.multiselect("Topics to load", docs_core.sample_topics(), key=K.topics)
        st.session_state[K.topics_text] = ",".join(st.session_state[K.topics])
        documents = docs_core.sample_corpus(st.session_state[K.topics])
    else:
        documents = docs_core.sample_corpus()
elif mode == UPLOAD:
    files = st.file_uploader("Files (txt, md, pdf, html; up to 50 MB each)", type=["txt", "md", "markdown", "pdf", "html", "htm"],
                             accept_multiple_files=True, key=K.uploads)
    for f in files or []:
        try:
            documents.append(docs_core.load_bytes(f.name, f.getvalue()))
        except PlaygroundError as exc:
            st.error(describe(exc))  # this file is skipped; the others, and the index, stay as they are
    documents = docs_core.unique_sources(documents)
else:
    c1, c2 = st.columns([1, 4])
    c1.text_input("Name", key=K.paste_name)
    c2.text_area("Text", key=K.paste_text, height=160, placeholder="Paste any text to index")
    if st.session_state[K.paste_text].strip():
        try:
            documents = [docs_core.from_text(st.session_state[K.paste_name], st.session_state[K.paste_text])]
        except PlaygroundError as exc:
            fail(exc)

if not documents:
    st.info({SAMPLE: "Pick at least one topic.", UPLOAD: "Upload one or more files (txt, md, pdf, html) to index them.",
             PASTE: "Paste some text to index it."}[mode])
    st.stop()
c1, c2, c3 = st.columns(3)
c1.metric("Documents", f"{len(documents):,}")
c2.metric("Characters", f"{sum(d.chars for d in documents):,}")
c3.metric("Largest", f"{max(documents, key=lambda d: d.chars).source}")

# --- 2. chunking -------------------------------------------------------------------------------------

st.header("2 · Chunking", divider="gray")


def chunk_widgets(prefix_keys: tuple[str, str, str], container, percentile_key: str | None = None) -> None:
    method_key, size_key, overlap_key = prefix_keys
    b_size, b_overlap = bounds(ChunkSettings, "size"), bounds(ChunkSettings, "overlap")
    c1, c2, c3 = container.columns([2, 1, 1])
    c1.selectbox("Splitter", list(CHUNK_METHODS), key=method_key, format_func=CHUNK_METHODS.get,
                 on_change=on_method_change, args=(method_key, size_key, overlap_key))
    unit = ChunkSettings(method=st.session_state[method_key]).unit
    c2.number_input(f"Size ({unit})", int(b_size.lo), int(b_size.hi), step=10, key=size_key, help=b_size.help)
    semantic = st.session_state[method_key] == "semantic"
    c3.number_input(f"Overlap ({unit})", int(b_overlap.lo), int(b_overlap.hi), step=5, key=overlap_key,
                    help=b_overlap.help, disabled=semantic)
    if semantic and percentile_key:
        b = bounds(ChunkSettings, "breakpoint_percentile")
        container.slider("Breakpoint percentile", int(b.lo), int(b.hi), key=percentile_key, help=b.help)


chunk_widgets((K.chunk_method, K.chunk_size, K.chunk_overlap), st.container(), K.percentile)
setup_a = current_setup()
embedder_id = setup_a.index.embedder


def fingerprint(docs: list[docs_core.Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.source.encode() + b"\0" + hashlib.sha256(d.text.encode()).digest())
    return h.hexdigest()


def get_chunks(docs: list[docs_core.Document], settings: ChunkSettings, emb_id: str):
    """Chunks of `docs`, remembered in the session for the same documents, settings and embedder."""
    key = (fingerprint(docs), settings, emb_id)
    memo = st.session_state.get(K.chunks_memo) or {}
    if key in memo:
        return memo[key]
    tok = cache.tokenizer(emb_id)
    model = cache.embedder(emb_id) if settings.method == "semantic" else None
    if settings.method == "semantic" or len(docs) > 20:
        bar = st.progress(0.0, text="Chunking…")
        chunks = split(docs, settings, tok, model, progress=lambda f, m: bar.progress(min(f, 1.0), text=m))
        bar.empty()
    else:
        chunks = split(docs, settings, tok, model)
    memo = {k: v for k, v in memo.items() if k[0] == key[0]}  # keep other settings of the same documents
    memo[key] = chunks
    st.session_state[K.chunks_memo] = memo
    return chunks


try:
    setup_a.index.check()
    chunks = get_chunks(documents, setup_a.index.chunking, embedder_id)
    emb_model = cache.embedder(embedder_id)
except PlaygroundError as exc:
    fail(exc)
    st.stop()
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
    st.plotly_chart(view.length_histogram(chunks, limit, setup_a.index.chunking.size, setup_a.index.chunking.unit),
                    key="rag_hist")
with left:
    sources = [d.source for d in documents]
    if st.session_state.get(K.view_doc) not in sources:
        st.session_state[K.view_doc] = sources[0]
    st.selectbox("Document to look at", sources, key=K.view_doc)
    doc = next(d for d in documents if d.source == st.session_state[K.view_doc])
    mine = [c for c in chunks if c.source == doc.source]
    st.caption(f"{doc.source}: {doc.chars:,} characters in {len(mine)} chunk(s). Numbers mark where each chunk starts.")
    with st.container(height=320):
        st.html(view.chunk_spans_html(doc.text, mine))

# --- 3. embedding and the index --------------------------------------------------------------------------

st.header("3 · Embed and index in Qdrant", divider="gray")
c1, c2, c3 = st.columns([2, 1, 2])
c1.selectbox("Embedding model", EMBEDDERS, key=K.embedder, format_func=label,
             help="Any sentence-transformers model in the catalogue: the bundled MiniLM, or a downloaded Hub model.")
c2.selectbox("Distance", list(store.DISTANCES), key=K.distance,
             help="cosine: angle between vectors; dot: dot product (= cosine for normalised vectors); "
                  "euclid: straight-line distance (lower is closer).")
c3.radio("Store", [LOCAL, SERVER], key=K.store_mode, horizontal=True)
url = ""
if st.session_state[K.store_mode] == SERVER:
    c1, c2 = st.columns([2, 1])
    c1.text_input("Qdrant URL", key=K.url, placeholder="http://localhost:6333")
    c2.text_input("API key", key=K.api_key, type="password", help="Leave empty for a server without authentication.")
    url = st.session_state[K.url].strip()
    if not url:
        st.info("Type the URL of a Qdrant server or cluster, or pick the local store.")
        st.stop()
try:
    client, lock = cache.qdrant(url, st.session_state[K.api_key] if url else "")
except PlaygroundError as exc:
    fail(exc)
    st.stop()

collection = setup_a.index.collection
with lock:
    try:
        have = len(store.existing_ids(client, collection, [c.id for c in chunks])) if store.exists(client, collection) else 0
        points = store.count(client, collection) if store.exists(client, collection) else 0
    except PlaygroundError as exc:
        fail(exc)
        st.stop()
where = "the local store" if not url else url
status_line = st.empty()  # filled once indexing (if asked for) is done


def run_index(spec: IndexSpec, docs: list[docs_core.Document], chunk_list, title: str):
    """Index with a progress bar; the report, or None after showing the error."""
    model = cache.embedder(spec.embedder)
    tok = cache.tokenizer(spec.embedder)
    with st.status(title, expanded=True) as status:
        bar = st.progress(0.0)
        try:
            with lock:
                report = index(client, docs, spec, model, tok, progress=lambda f, m: bar.progress(min(f, 1.0), text=m),
                               chunks=chunk_list)
        except PlaygroundError as exc:
            status.update(label="Indexing failed: what was indexed before is untouched", state="error")
            fail(exc)
            return None
        status.update(label=f"Indexed: {report.added:,} added, {report.unchanged:,} unchanged, {report.removed:,} removed "
                            f"in {report.seconds:.1f} s", state="complete", expanded=False)
    return report


if st.button("Index these chunks" if have < len(chunks) else "Index again (nothing will change)", key=K.index,
             type="primary" if have < len(chunks) else "secondary", icon=":material/database:"):
    report = run_index(setup_a.index, documents, chunks, f"Indexing {len(chunks):,} chunks into {collection}…")
    if report is not None:
        st.session_state[K.index_report] = report
        have = len(chunks)
        points = report.points
status_line.markdown(f"Collection **`{collection}`** in {where}: **{have:,} of these {len(chunks):,} chunks** are "
                     f"indexed ({points:,} points in all).")
report = st.session_state.get(K.index_report)
if report is not None and report.collection == collection:
    st.caption(f"Last indexing: {report.added:,} chunks embedded and written ({report.chunks_per_second:.1f} chunks/s), "
               f"{report.unchanged:,} already there, {report.removed:,} outdated chunks removed; "
               f"{report.points:,} points now.")


def delete_collection() -> None:
    name = st.session_state[K.coll_pick]
    try:
        with lock:
            store.delete_collection(client, name)
        st.session_state[K.message] = f"Deleted the collection {name!r}."
        st.session_state[K.coll_confirm] = False
    except PlaygroundError as exc:
        st.session_state["rag_coll_error"] = describe(exc)


with st.expander("Collections in this store"):
    try:
        with lock:
            infos = store.list_collections(client)
    except PlaygroundError as exc:
        infos = []
        fail(exc)
    if infos:
        st.dataframe([{"collection": i.name, "points": i.points, "dimensions": i.dim, "distance": i.distance,
                       "embedder": i.meta.get("embedder", "?"),
                       "chunking": (i.meta.get("chunking") or {}).get("method", "?")} for i in infos], hide_index=True)
        c1, c2, c3 = st.columns([3, 2, 1], vertical_alignment="bottom")
        c1.selectbox("Collection", [i.name for i in infos], key=K.coll_pick)
        c2.checkbox("Yes, delete its points", key=K.coll_confirm)
        c3.button("Delete", key=K.coll_delete, on_click=delete_collection, disabled=not st.session_state.get(K.coll_confirm),
                  icon=":material/delete:")
    else:
        st.caption("No collection yet.")
    if st.session_state.get("rag_coll_error"):
        st.error(st.session_state.pop("rag_coll_error"))

if points == 0:
    st.info("Index the chunks (button above) to retrieve from them: the next steps need the collection.")
    state.to_url(URL)
    st.stop()

# --- 4. retrieval ------------------------------------------------------------------------------------------

st.header("4 · Retrieve", divider="gray")
st.text_input("Question", key=K.question)
c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
c1.radio("Retrieval", list(RETRIEVAL_METHODS), key=K.method, format_func=RETRIEVAL_METHODS.get, horizontal=True)
bk, bt, bn = (bounds(RetrievalSettings, n) for n in ("top_k", "score_threshold", "neighbours"))
c2.slider("Top-k", int(bk.lo), int(bk.hi), key=K.top_k, help=bk.help)
c3.number_input("Score threshold", float(bt.lo), float(bt.hi), step=0.05, key=K.threshold,
                help=bt.help + ". Dense: cosine similarity; sparse: BM25 score; hybrid: RRF score (at most 1).")
c4.slider("Neighbours", int(bn.lo), int(bn.hi), key=K.neighbours, help=bn.help)
with lock:
    try:
        all_sources = store.sources(client, collection)
    except PlaygroundError as exc:
        all_sources = []
        fail(exc)
st.session_state[K.sources] = [s for s in st.session_state.get(K.sources) or [] if s in all_sources]
st.multiselect("Only from these sources (empty: all)", all_sources, key=K.sources)
setup_a = current_setup()

retrieval = None
try:
    with lock:
        retrieval = retrieve(client, collection, emb_model, st.session_state[K.question], setup_a.retrieval)
except PlaygroundError as exc:
    fail(exc)
if retrieval is not None:
    st.caption(f"{len(retrieval.hits)} passage(s) in {retrieval.seconds * 1000:.0f} ms · query terms for BM25: "
               + (", ".join(f"`{t}`" for t in retrieval.query_terms) or "none"))

# --- 5. the prompt and the answer ----------------------------------------------------------------------------

st.header("5 · Prompt and answer", divider="gray")
c1, c2, c3 = st.columns([2, 1, 1])
c1.selectbox("Model that answers", GENERATORS, key=K.generator, format_func=label)
b_new = bounds(Setup, "max_new_tokens")
c2.number_input("Tokens for the answer", int(b_new.lo), int(b_new.hi), key=K.max_new, help=b_new.help)
lm = require(st.session_state[K.generator])
if K.window not in st.session_state or st.session_state[K.window] > lm.context_length:
    st.session_state[K.window] = lm.context_length
c3.number_input("Context window", 64, lm.context_length, step=64, key=K.window,
                help=f"{lm.spec.name} reads up to {lm.context_length:,} tokens; set it lower to see the cut rule at work.")
st.text_area("Prompt template (LangChain; {context} and {question} are filled in)", key=K.template, height=130)

plan = None
if retrieval is not None:
    try:
        plan = build_prompt(lm, st.session_state[K.template], st.session_state[K.question], retrieval.hits,
                            GenerationSettings(max_new_tokens=int(st.session_state[K.max_new])),
                            context_window=int(st.session_state[K.window]))
    except PlaygroundError as exc:
        fail(exc)

left, right = st.columns([3, 2])
with left:
    st.subheader("Retrieved passages")
    if retrieval is not None:
        view.hits(retrieval, "a", dropped=plan.dropped if plan else ())
with right:
    if plan is not None:
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
                s = ask(lm, plan)
                text = ""
                for piece in s:
                    text += piece.text
                    box.html(view.answer_html(text + "▌", len(plan.used), "a"))
                st.session_state[K.answer_result] = finish(plan, s)
            except PlaygroundError as exc:
                fail(exc)
        done = st.session_state.get(K.answer_result)
        if done is not None and done.plan.prompt == plan.prompt:
            box.html(view.answer_html(done.text, len(done.plan.used), "a"))
            r = done.result
            st.caption(f"{r.new_tokens} tokens · {r.tokens_per_second:.1f} tokens/s · first token after "
                       f"{r.time_to_first_token:.1f} s · stopped: {r.finish_reason}")
            st.markdown(view.citations_list(done.text, done.plan.used))
        elif not pressed:
            box.caption("Press Answer to stream the model's answer to this prompt.")

if retrieval is not None:
    with st.expander("Embedding space (PCA)", expanded=True):
        st.toggle("Show the chunks and the question in 2D", key=K.show_space)
        if st.session_state[K.show_space]:
            try:
                with lock:
                    proj = project(client, collection, retrieval)
                st.plotly_chart(view.pca_figure(proj, retrieval.question), key="rag_pca")
            except PlaygroundError as exc:
                fail(exc)

# --- 6. A/B ----------------------------------------------------------------------------------------------

st.header("6 · A/B: two setups, one question", divider="gray")
st.caption("Setup A is everything above. Setup B is A with the changes you make here; a different chunking gets "
           "its own collection, indexed when you compare.")
c1, c2, c3 = st.columns([2, 1, 1])
c1.radio("B: retrieval", list(RETRIEVAL_METHODS), key=K.b_method, format_func=RETRIEVAL_METHODS.get, horizontal=True)
c2.slider("B: top-k", int(bk.lo), int(bk.hi), key=K.b_top_k)
c3.slider("B: neighbours", int(bn.lo), int(bn.hi), key=K.b_neighbours)
chunk_widgets((K.b_chunk_method, K.b_chunk_size, K.b_chunk_overlap), st.container())
b_chunking = ChunkSettings(st.session_state[K.b_chunk_method], int(st.session_state[K.b_chunk_size]),
                           int(st.session_state[K.b_chunk_overlap]), int(st.session_state[K.percentile]))
setup_b = replace(setup_a, index=replace(setup_a.index, chunking=b_chunking),
                  retrieval=replace(setup_a.retrieval, method=st.session_state[K.b_method],
                                    top_k=int(st.session_state[K.b_top_k]), neighbours=int(st.session_state[K.b_neighbours])))
st.markdown(f"**A:** {setup_a.label}  \n**B:** {setup_b.label}")
st.toggle("Answer with both", key=K.ab_answers, help="Off: compare the passages only (faster).")


def ensure_indexed(setup: Setup, name: str) -> bool:
    """Index `setup`'s collection for the current documents if it lacks any of their chunks."""
    try:
        setup.index.check()
        chunk_list = get_chunks(documents, setup.index.chunking, setup.index.embedder)
        with lock:
            missing = (not store.exists(client, setup.index.collection)
                       or len(store.existing_ids(client, setup.index.collection, [c.id for c in chunk_list])) < len(chunk_list))
    except PlaygroundError as exc:
        fail(exc)
        return False
    if not missing:
        return True
    return run_index(setup.index, documents, chunk_list, f"Indexing setup {name}: {len(chunk_list):,} chunks…") is not None


if st.button("Compare A and B", key=K.ab_run, type="primary", icon=":material/compare_arrows:"):
    if ensure_indexed(setup_b, "B"):
        try:
            with lock:
                ab = compare(client, (emb_model, emb_model), st.session_state[K.question], setup_a, setup_b)
            answers = [None, None]
            if st.session_state[K.ab_answers]:
                cols = st.columns(2)
                for i, (r, name) in enumerate(((ab.ra, "A"), (ab.rb, "B"))):
                    p = build_prompt(lm, setup_a.template, ab.ra.question, r.hits,
                                     GenerationSettings(max_new_tokens=int(st.session_state[K.max_new])),
                                     context_window=int(st.session_state[K.window]))
                    box = cols[i].empty()
                    s = ask(lm, p)
                    text = ""
                    for piece in s:
                        text += piece.text
                        box.html(view.answer_html(f"{name}: {text}▌", len(p.used), name.lower()))
                    answers[i] = finish(p, s)
            st.session_state[K.ab_result] = (ab, answers)
        except PlaygroundError as exc:
            fail(exc)

ab_state = st.session_state.get(K.ab_result)
if ab_state is not None:
    ab, answers = ab_state
    if ab.ra.question != st.session_state[K.question]:
        st.caption(f"Last comparison, for the question {ab.ra.question!r}:")
    st.markdown(view.overlap_caption(ab.overlap, len(ab.ra.hits), len(ab.rb.hits)))
    col_a, col_b = st.columns(2)
    for col, name, setup, r, shared, ans in ((col_a, "A", ab.a, ab.ra, ab.overlap.a_shared, answers[0]),
                                             (col_b, "B", ab.b, ab.rb, ab.overlap.b_shared, answers[1])):
        with col:
            st.subheader(f"Setup {name}")
            st.caption(setup.label)
            if ans is not None:
                st.html(view.answer_html(ans.text, len(ans.plan.used), name.lower()))
                st.caption(f"{ans.result.new_tokens} tokens · {len(ans.plan.used)} passages in the prompt · "
                           f"{ans.plan.prompt_tokens:,} prompt tokens")
            view.hits(r, name.lower(), shared=shared)

# --- 7. evaluation -----------------------------------------------------------------------------------------

st.header("7 · Evaluate retrieval", divider="gray")
st.caption("Questions whose right source is known: recall@k and MRR of setups A and B.")
st.radio("Questions", [BUNDLED_SET, TYPED_SET, UPLOADED_SET], key=K.eval_source, horizontal=True)
questions: list[EvalQuestion] = []
eval_problem = None
try:
    if st.session_state[K.eval_source] == BUNDLED_SET:
        questions = bundled_questions()
        st.caption(f"{len(questions)} questions on the sample corpus, {sum(q.kind == 'keyword' for q in questions)} of them "
                   "hinging on an exact identifier (keyword questions).")
    elif st.session_state[K.eval_source] == TYPED_SET:
        st.text_area("One per line: question | source (several sources: a; b)", key=K.eval_text, height=100)
        questions = parse_questions(st.session_state[K.eval_text], "the typed questions")
    else:
        f = st.file_uploader("JSON list of {question, source} or CSV with question,source", type=["json", "csv", "txt"],
                             key=K.eval_file)
        if f is not None:
            questions = parse_questions(f.getvalue().decode("utf-8", errors="replace"), f.name)
except PlaygroundError as exc:
    eval_problem = describe(exc)
    st.error(eval_problem)
indexed_sources = set(all_sources)
answerable = [q for q in questions if set(q.sources) & indexed_sources]
if questions and len(answerable) < len(questions):
    st.caption(f"{len(questions) - len(answerable)} question(s) name only sources that are not indexed and are left out; "
               f"{len(answerable)} remain.")
st.slider("k", 1, 20, key=K.eval_k, help="A question counts as found when a right source is among the top k passages.")
if st.button("Evaluate A and B", key=K.eval_run, type="primary", disabled=not answerable, icon=":material/fact_check:"):
    results = []
    if ensure_indexed(setup_b, "B"):
        bar = st.progress(0.0, text="Evaluating…")
        try:
            for i, (name, s) in enumerate((("A", setup_a), ("B", setup_b))):
                k = int(st.session_state[K.eval_k])
                with lock:
                    results.append(evaluate(client, s.index.collection, emb_model, answerable,
                                            replace(s.retrieval, top_k=k), label=s.label,
                                            progress=lambda f, m, i=i, name=name: bar.progress(min((i + f) / 2, 1.0),
                                                                                              text=f"setup {name}: {m}")))
            st.session_state[K.eval_result] = results
        except PlaygroundError as exc:
            fail(exc)
        bar.empty()
results = st.session_state.get(K.eval_result)
if results:
    st.dataframe(view.eval_table(results), hide_index=True)
    st.plotly_chart(view.eval_figure(results), key="rag_eval_chart")
    with st.expander("Per question"):
        st.dataframe(view.eval_questions(results), hide_index=True)

state.to_url(URL)
