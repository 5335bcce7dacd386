"""Rendering the RAG builder: chunks as coloured spans over their source, the chunk-length histogram,
retrieved passages with scores, ranks per method and the question's terms highlighted, the PCA
scatter of the embedding space, the prompt's token budget, answers whose [n] link to passages,
A/B overlap, and the evaluation table and chart.

All text reaching HTML goes through `html.escape` (documents are user input).

What it leaves out: computing any of it (playground.rag) and loading models (components.cache).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from playground.rag.chunking import Chunk
from playground.rag.pipeline import EvalResult, Overlap, Projection, PromptPlan, citation_spans
from playground.rag.retrieval import METHODS, Retrieval, RetrievedChunk, highlight_spans

PALETTE = ["#dbeafe", "#fde68a", "#bbf7d0", "#fbcfe8", "#ddd6fe", "#fed7aa", "#a5f3fc", "#d9f99d"]
OVERLAP = "#f59e0b"
MAX_SPAN_CHARS = 30_000  # of one source drawn as spans; the rest is summarised
SOURCE_COLOURS = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626",
                  "#4b5563", "#9333ea", "#0d9488", "#ca8a04"]

CSS = """
<style>
.ragv{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85rem;line-height:1.75;
      white-space:pre-wrap;word-break:break-word;color:#1c1b22}
.ragv .c{border-radius:2px;padding:1px 0}
.ragv .ov{background:#fcd34d;box-shadow:inset 0 -2px 0 #b45309}
.ragv .gap{color:#9ca3af}
.ragv .n{font-family:sans-serif;font-size:.68rem;font-weight:700;color:#fff;background:#6c4cf5;border-radius:3px;
         padding:0 3px;margin-right:2px;vertical-align:1px}
.ragv .more{font-family:sans-serif;color:#6b7280;font-style:italic}
.raghit{border:1px solid #e5e7eb;border-left:4px solid #6c4cf5;border-radius:6px;padding:.45rem .7rem;margin:.45rem 0;
        font-family:sans-serif;font-size:.9rem}
.raghit.shared{border-left-color:#059669}
.raghit.cut{opacity:.55;border-left-color:#9ca3af}
.raghit .hd{display:flex;flex-wrap:wrap;gap:.6rem;align-items:baseline;margin-bottom:.25rem}
.raghit .num{font-weight:700;color:#6c4cf5}
.raghit .src{font-weight:600}
.raghit .meta{color:#6b7280;font-size:.8rem}
.raghit .rk{font-size:.75rem;background:#f3f1fb;border-radius:3px;padding:0 4px;margin-right:3px}
.raghit .rk.none{color:#9ca3af}
.raghit .body{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.8rem;white-space:pre-wrap;
              word-break:break-word;line-height:1.5;max-height:14rem;overflow:auto}
.raghit .nb{color:#6b7280}
.raghit mark{background:#fde047;padding:0 1px;border-radius:2px}
.raganswer{font-family:sans-serif;font-size:.95rem;line-height:1.6;white-space:pre-wrap}
.raganswer a.cite{font-weight:700;color:#6c4cf5;text-decoration:none;background:#f3f1fb;border-radius:3px;padding:0 2px}
.raganswer a.cite.bad{color:#dc2626;background:#fee2e2}
</style>
"""


def css() -> None:
    """The page's styles, once per run."""
    st.html(CSS)


# --- chunks over their source -------------------------------------------------------------------

def chunk_spans_html(text: str, chunks: Sequence[Chunk], max_chars: int = MAX_SPAN_CHARS) -> str:
    """The source with each chunk in its own colour; text two chunks share (overlap) in amber;
    text in no chunk (whitespace the splitter dropped) grey. Hover a span for its chunk."""
    limit = min(len(text), max_chars)
    bounds = sorted({0, limit, *(min(c.start, limit) for c in chunks), *(min(c.end, limit) for c in chunks)})
    starts = {c.start: c for c in chunks}
    parts: list[str] = []
    for a, b in zip(bounds, bounds[1:]):
        if a >= b:
            continue
        covering = [c for c in chunks if c.start <= a and b <= c.end]
        seg = html.escape(text[a:b])
        badge = f'<span class="n">{starts[a].position}</span>' if a in starts else ""
        if not covering:
            parts.append(f'{badge}<span class="gap">{seg}</span>')
        elif len(covering) == 1:
            c = covering[0]
            tip = html.escape(f"chunk {c.position} · chars {c.start:,}–{c.end:,} · {c.tokens} tokens", quote=True)
            parts.append(f'{badge}<span class="c" style="background:{PALETTE[c.position % len(PALETTE)]}" title="{tip}">{seg}</span>')
        else:
            tip = html.escape("overlap of chunks " + ", ".join(str(c.position) for c in covering), quote=True)
            parts.append(f'{badge}<span class="c ov" title="{tip}">{seg}</span>')
    if limit < len(text):
        rest = [c for c in chunks if c.start >= limit]
        parts.append(f'<span class="more">\n… {len(text) - limit:,} more characters and {len(rest):,} more chunks not drawn.</span>')
    return f'<div class="ragv">{"".join(parts)}</div>'


def length_histogram(chunks: Sequence[Chunk], max_tokens: int, size: int, unit: str) -> go.Figure:
    """Chunk lengths in tokens of the embedding tokenizer; the line is where the embedder stops reading."""
    fig = go.Figure(go.Histogram(x=[c.tokens for c in chunks], nbinsx=40, marker_color="#6c4cf5",
                                 hovertemplate="%{x} tokens: %{y} chunks<extra></extra>"))
    fig.add_vline(x=max_tokens, line_dash="dash", line_color="#dc2626",
                  annotation_text=f"embedder reads {max_tokens} tokens", annotation_position="top left")
    if unit == "tokens":
        fig.add_vline(x=size, line_dash="dot", line_color="#059669", annotation_text=f"size {size}",
                      annotation_position="top right")
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="tokens per chunk",
                      yaxis_title="chunks", bargap=0.05)
    return fig


# --- retrieved passages -----------------------------------------------------------------------------

def marked_terms(query_terms: Sequence[str]) -> list[str]:
    """The query terms worth marking: common English words are left out unless they are Python keywords
    ("with", "if", "in" stay). Display only: retrieval uses every term (BM25's IDF weighs them)."""
    import keyword

    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    keep = set(keyword.kwlist) | set(keyword.softkwlist)
    return [t for t in query_terms if t in keep or t not in ENGLISH_STOP_WORDS]


def _highlight(text: str, query_terms: Sequence[str]) -> str:
    out, last = [], 0
    for a, b in highlight_spans(text, marked_terms(query_terms)):
        out.append(html.escape(text[last:a]))
        out.append(f"<mark>{html.escape(text[a:b])}</mark>")
        last = b
    out.append(html.escape(text[last:]))
    return "".join(out)


def anchor(prefix: str, number: int) -> str:
    return f"rag-{prefix}-passage-{number}"


def hit_html(h: RetrievedChunk, number: int, query_terms: Sequence[str], prefix: str, method: str, depth: int,
             css_class: str = "", note: str = "") -> str:
    """One passage: number, source, chunk, score, its rank under each method, the text with query terms marked."""
    ranks = []
    for m in METHODS:
        r = h.ranks.get(m) if h.ranks else None
        label = f"{m} #{r}" if r else f"{m} >{depth}"
        ranks.append(f'<span class="rk{"" if r else " none"}" title="rank under {m} retrieval">{label}</span>')
    body = []
    before = [c for c in h.neighbours if c.position < h.chunk.position]
    after = [c for c in h.neighbours if c.position > h.chunk.position]
    if before:
        body.append(f'<span class="nb">{html.escape(_merge(before, h.chunk, "before"))}</span>')
    body.append(_highlight(h.chunk.text, query_terms))
    if after:
        body.append(f'<span class="nb">{html.escape(_merge(after, h.chunk, "after"))}</span>')
    score_name = {"dense": "similarity", "sparse": "BM25", "hybrid": "RRF"}.get(method, "score")
    nb = f" · +{len(h.neighbours)} neighbour chunk(s) in grey" if h.neighbours else ""
    return (
        f'<div class="raghit {css_class}" id="{anchor(prefix, number)}"><div class="hd">'
        f'<span class="num">[{number}]</span><span class="src">{html.escape(h.source)}</span>'
        f'<span class="meta">chunk {h.chunk.position} · chars {h.chunk.start:,}–{h.chunk.end:,} · {h.chunk.tokens} tokens{nb}</span>'
        f'<span class="meta">{score_name} {h.score:.4f}</span><span>{"".join(ranks)}</span>'
        f'{f"<span class=meta>{html.escape(note)}</span>" if note else ""}</div>'
        f'<div class="body">{"".join(body)}</div></div>'
    )


def _merge(chunks: Sequence[Chunk], hit: Chunk, side: str) -> str:
    """Neighbour text before/after a hit, without the characters the hit itself repeats."""
    from playground.rag.retrieval import merge_text

    text = merge_text(chunks)
    if side == "before":
        end = max(c.end for c in chunks)
        cut = max(0, end - hit.start)  # overlap with the hit
        return (text[: len(text) - cut] if cut else text) + ("" if cut else "\n")
    start = min(c.start for c in chunks)
    cut = max(0, hit.end - start)
    return ("" if cut else "\n") + text[cut:]


def hits(r: Retrieval, prefix: str = "a", shared: Sequence[bool] | None = None,
         dropped: Sequence[RetrievedChunk] = ()) -> None:
    """The retrieved passages of `r`, numbered as the prompt numbers them."""
    if not r.hits:
        st.info("Nothing was retrieved: lower the score threshold, widen the source filter, or check the question's words.")
        return
    gone = {h.id for h in dropped}
    parts = []
    for i, h in enumerate(r.hits, start=1):
        cls, note = "", ""
        if shared is not None and shared[i - 1]:
            cls, note = "shared", "also found by the other setup"
        if h.id in gone:
            cls, note = "cut", "cut from the prompt: it did not fit"
        parts.append(hit_html(h, i, r.query_terms, prefix, r.settings.method, r.depth, cls, note))
    st.html("".join(parts))


# --- the embedding space -------------------------------------------------------------------------

def pca_figure(p: Projection, question: str = "") -> go.Figure:
    """Chunks in the plane of the first two principal components, coloured by source; hits ringed and numbered."""
    df = pd.DataFrame({
        "x": p.xy[:, 0], "y": p.xy[:, 1], "source": [c.source for c in p.chunks],
        "position": [c.position for c in p.chunks], "rank": p.retrieved_rank,
        "text": [c.text[:140].replace("\n", " ") + ("…" if len(c.text) > 140 else "") for c in p.chunks],
    })
    fig = go.Figure()
    sources = list(dict.fromkeys(df["source"]))
    for i, src in enumerate(sources):
        d = df[df["source"] == src]
        fig.add_trace(go.Scattergl(
            x=d["x"], y=d["y"], mode="markers", name=src, legendgroup=src,
            marker=dict(size=6 if len(df) > 300 else 9, color=SOURCE_COLOURS[i % len(SOURCE_COLOURS)], opacity=0.6),
            customdata=d[["source", "position", "text"]].values,
            hovertemplate="<b>%{customdata[0]}</b> · chunk %{customdata[1]}<br>%{customdata[2]}<extra></extra>",
        ))
    hit = df[df["rank"].notna()].sort_values("rank")
    if len(hit):
        fig.add_trace(go.Scatter(
            x=hit["x"], y=hit["y"], mode="markers+text", name="retrieved", text=[f"[{int(r)}]" for r in hit["rank"]],
            textposition="top center", marker=dict(size=14, color="rgba(0,0,0,0)", line=dict(color="#111827", width=2)),
            hovertemplate="retrieved [%{text}]<extra></extra>",
        ))
    if p.query_xy is not None:
        fig.add_trace(go.Scatter(x=[p.query_xy[0]], y=[p.query_xy[1]], mode="markers+text", name="question",
                                 text=["question"], textposition="bottom center",
                                 marker=dict(symbol="star", size=18, color="#dc2626", line=dict(color="#111827", width=1)),
                                 hovertemplate=html.escape(question[:120]) + "<extra>question</extra>"))
    shown = f"{len(p.chunks):,} of {p.total_points:,} chunks" if len(p.chunks) < p.total_points else f"{p.total_points:,} chunks"
    fig.update_layout(
        height=480, margin=dict(l=10, r=10, t=40, b=10),
        title=dict(text=f"{shown} · PC1 {p.explained[0]:.0%} and PC2 {p.explained[1]:.0%} of the variance", font=dict(size=13)),
        xaxis_title="PC1", yaxis_title="PC2", legend=dict(font=dict(size=10), itemsizing="constant"),
        showlegend=len(sources) <= 30,
    )
    return fig


# --- the prompt and the answer --------------------------------------------------------------------

def budget_figure(plan: PromptPlan) -> go.Figure:
    """The context window as one bar: prompt tokens, tokens reserved for the answer, what is left."""
    free = max(plan.context_window - plan.prompt_tokens - plan.reserved, 0)
    fig = go.Figure()
    for name, value, colour in (("prompt", plan.prompt_tokens, "#6c4cf5"), ("reserved for the answer", plan.reserved, "#f59e0b"),
                                ("free", free, "#e5e7eb")):
        fig.add_trace(go.Bar(y=["context window"], x=[value], name=f"{name}: {value:,}", orientation="h",
                             marker_color=colour, hovertemplate=f"{name}: {value:,} tokens<extra></extra>"))
    fig.update_layout(barmode="stack", height=150, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(range=[0, plan.context_window], title=f"tokens (window {plan.context_window:,})"),
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0, font=dict(size=11)),
                      yaxis=dict(showticklabels=False))
    return fig


def answer_html(text: str, n_passages: int, prefix: str = "a") -> str:
    """The answer with each [n] a link to passage n (red when there is no passage n)."""
    out, last = [], 0
    for a, b, numbers in citation_spans(text):
        out.append(html.escape(text[last:a]))
        links = []
        for n in numbers:
            ok = 1 <= n <= n_passages
            links.append(f'<a class="cite{"" if ok else " bad"}" href="#{anchor(prefix, n)}" '
                         f'title="{"passage " + str(n) if ok else "there is no passage " + str(n)}">{n}</a>')
        out.append("[" + ", ".join(links) + "]")
        last = b
    out.append(html.escape(text[last:]))
    return f'<div class="raganswer">{"".join(out)}</div>'


def citations_list(text: str, used: Sequence[RetrievedChunk]) -> str:
    """Markdown: which passage each cited number is."""
    from playground.rag.pipeline import cite

    cs = cite(text, used)
    if not cs:
        return "The answer cites no passage."
    lines = []
    for c in cs:
        if c.hit is None:
            lines.append(f"- **[{c.number}]** — there is no passage {c.number}: the model made it up.")
        else:
            snippet = re.sub(r"\s+", " ", c.hit.chunk.text)[:90]
            lines.append(f"- **[{c.number}]** → `{c.hit.source}` chunk {c.hit.chunk.position}: {snippet}…")
    return "\n".join(lines)


# --- A/B and evaluation ------------------------------------------------------------------------------

def overlap_caption(o: Overlap, na: int, nb: int) -> str:
    return (f"**Overlap:** {sum(o.a_shared)} of A's {na} passages overlap one of B's ({sum(o.b_shared)} of B's {nb} overlap A's); "
            f"{o.same_chunks} identical chunk(s); the text they share is {o.char_jaccard:.0%} of all the text either retrieved "
            f"(Jaccard over characters). Shared sources: {', '.join(o.shared_sources) or 'none'}.")


def eval_table(results: Sequence[EvalResult]) -> pd.DataFrame:
    """One row per setup: recall@k and MRR overall and on the keyword questions."""
    rows = []
    for name, r in zip(("A", "B", "C", "D"), results):
        kw = r.of_kind("keyword")
        rows.append({"setup": name, "what": r.label, "k": r.k, "questions": len(r.rows), f"recall@{r.k}": round(r.recall, 3),
                     "MRR": round(r.mrr, 3), "keyword recall": round(kw.recall, 3) if kw.rows else None,
                     "keyword MRR": round(kw.mrr, 3) if kw.rows else None, "seconds": round(r.seconds, 1)})
    return pd.DataFrame(rows)


def eval_questions(results: Sequence[EvalResult]) -> pd.DataFrame:
    """One row per question: the rank of its first right passage under each setup (blank: not in the top k)."""
    base = results[0]
    df = pd.DataFrame({"question": [r.question for r in base.rows], "kind": [r.kind for r in base.rows],
                       "expected": [", ".join(r.expected) for r in base.rows]})
    for name, res in zip(("A", "B", "C", "D"), results):
        df[f"rank {name}"] = [r.rank for r in res.rows]
        df[f"found {name}"] = [", ".join(dict.fromkeys(r.found)) for r in res.rows]
    return df


def eval_figure(results: Sequence[EvalResult]) -> go.Figure:
    fig = go.Figure()
    names = [f"setup {n}" for n, _ in zip(("A", "B", "C", "D"), results)]
    for metric, colour in (("recall", "#6c4cf5"), ("mrr", "#f59e0b")):
        fig.add_trace(go.Bar(x=names, y=[getattr(r, metric) for r in results], customdata=[r.label for r in results],
                             name=f"recall@{results[0].k}" if metric == "recall" else "MRR", marker_color=colour,
                             text=[f"{getattr(r, metric):.2f}" for r in results], textposition="outside",
                             hovertemplate="%{x}: %{y:.3f}<br>%{customdata}<extra></extra>"))
    fig.update_layout(barmode="group", height=320, yaxis=dict(range=[0, 1.1], title="score"),
                      margin=dict(l=10, r=10, t=20, b=10))
    return fig
