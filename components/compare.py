"""Rendering comparisons: answers streaming in side-by-side columns with their numbers under
each, speed and memory charts, the precision-variants table, text coloured by surprisal, and
Hub search results.

Everything that reaches HTML goes through `html.escape` (a model's answer or a token can be
`<script>`). Charts are plotly.

What it leaves out: running models (playground.compare) and loading them (components.cache).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from components import answer_tokens
from components.format import human_bytes, human_count
from playground.compare import Comparison, ModelRun, Perplexity, Update, VariantReport
from playground.generate import GenerationSettings
from playground.hub import HubModel

COLOURS = ["#2563eb", "#d97706", "#059669", "#db2777"]
CURSOR = " ▌"
MAX_SURPRISAL = 10.0  # nats at which the colour saturates (p = e^-10, about 1 in 22,000)

FINISH_HELP = {
    "end of turn": "the model closed its turn (its chat template's end-of-turn token)",
    "end of sequence": "the model produced its end-of-sequence token",
    "max tokens": "cut off at the max new tokens setting",
    "stop sequence": "one of the stop sequences appeared",
    "cancelled": "stopped before it finished",
    "error": "generation failed",
}


def settings_caption(s: GenerationSettings) -> str:
    how = "greedy" if s.temperature == 0 else f"temperature {s.temperature:g}, top-p {s.top_p:g}, seed {s.seed}"
    stop = f" · stops at {', '.join(repr(x) for x in s.stop)}" if s.stop else ""
    return f"{how} · up to {s.max_new_tokens} tokens{stop}"


def _header(column, label: str, templated: bool, settings: GenerationSettings, index: int) -> None:
    column.markdown(f"<span style='color:{COLOURS[index % 4]};font-weight:700'>■</span> **{html.escape(label)}**",
                    unsafe_allow_html=True)
    column.caption(("chat template" if templated else "raw prompt (no chat template)") + " · " + settings_caption(settings))


def run_metrics(run: ModelRun) -> None:
    """The numbers under one column (in the current container)."""
    m = run.metrics
    if run.error:
        st.error(run.error)
    a, b = st.columns(2)
    a.metric("Tokens/s", f"{m.tokens_per_second:,.1f}", help="tokens generated per second after the first one")
    b.metric("First token", f"{m.time_to_first_token:,.2f} s", help="time to first token: reading the prompt, then one step")
    st.markdown(
        f"- **Tokens generated:** {m.new_tokens} of {run.settings.max_new_tokens} (its own tokenizer)\n"
        f"- **Stopped:** {m.finish_reason}\n"
        f"- **Prompt:** {m.prompt_tokens} tokens · **total** {m.total_seconds:,.2f} s\n"
        f"- **Load time:** {m.load_seconds:,.1f} s · **memory** {human_bytes(m.memory_bytes)}",
        help=FINISH_HELP.get(m.finish_reason),
    )
    with st.expander("Exact prompt the model read"):
        st.code(run.prompt, language=None, wrap_lines=True)


class StreamColumns:
    """2-4 columns that fill as `Update`s arrive; each shows its numbers once its model finishes."""

    def __init__(self, labels: Sequence[str], templated: Sequence[bool], settings: Sequence[GenerationSettings],
                 shade: str = "off") -> None:
        self.shade = shade
        self.columns = st.columns(len(labels), gap="medium", border=True)
        self.text = []
        self.metrics = []
        for i, col in enumerate(self.columns):
            _header(col, labels[i], templated[i], settings[i], i)
            self.text.append(col.empty())
            self.metrics.append(col.empty())
            self.text[i].caption("waiting for the first token…")

    def update(self, u: Update) -> None:
        if u.waiting is not None:  # in the server's work queue (playground.jobs); any click stops the wait
            self.text[u.column].caption(f":material/hourglass_top: waiting: {u.waiting} ahead of you in the "
                                        "server's queue…")
            if not getattr(self, "cancel_shown", False):
                self.cancel_shown = True
                st.button("Cancel", key="compare_cancel_wait", help="Leave the queue: the columns still waiting do not run.")
            return
        if u.run is not None:
            answer(u.run, self.shade, self.text[u.column])
            with self.metrics[u.column].container():
                run_metrics(u.run)
        elif u.text:
            self.text[u.column].text(u.so_far + CURSOR)


def answer(run: ModelRun, shade: str, where) -> None:
    """One column's answer: token by token (hover, shading, a link per token) where the engine kept
    their probabilities, else its text."""
    answer_tokens.show(run.logprobs, run.token_ids, run.origin, run.text, shade, where)


def comparison_columns(c: Comparison, shade: str = "off") -> None:
    """A finished comparison, drawn like the streamed one."""
    cols = st.columns(len(c.runs), gap="medium", border=True)
    for col, run in zip(cols, c.runs):
        _header(col, run.label, run.templated, run.settings, run.column)
        answer(run, shade, col)
        with col:
            run_metrics(run)


def speed_figure(c: Comparison) -> go.Figure:
    labels = [f"{r.column + 1}. {r.label}" for r in c.runs]
    colours = [COLOURS[r.column % 4] for r in c.runs]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Tokens per second", "Time to first token (s)", "Memory (MiB)"))
    fig.add_trace(go.Bar(x=labels, y=[r.metrics.tokens_per_second for r in c.runs], marker_color=colours), 1, 1)
    fig.add_trace(go.Bar(x=labels, y=[r.metrics.time_to_first_token for r in c.runs], marker_color=colours), 1, 2)
    fig.add_trace(go.Bar(x=labels, y=[r.metrics.memory_bytes / 2**20 for r in c.runs], marker_color=colours), 1, 3)
    mode = "all models at once, sharing the CPU" if c.concurrent else "one model at a time"
    fig.update_layout(showlegend=False, height=330, margin=dict(t=60, b=10, l=10, r=10),
                      title=dict(text=f"Measured {mode}", font=dict(size=13)))
    return fig


def comparison_table(c: Comparison) -> pd.DataFrame:
    return pd.DataFrame([
        {
            "model": f"{r.column + 1}. {r.label}",
            "tokens/s": round(r.metrics.tokens_per_second, 2),
            "first token (s)": round(r.metrics.time_to_first_token, 3),
            "tokens": r.metrics.new_tokens,
            "stopped": r.metrics.finish_reason,
            "prompt tokens": r.metrics.prompt_tokens,
            "load (s)": round(r.metrics.load_seconds, 2),
            "memory": human_bytes(r.metrics.memory_bytes),
        }
        for r in c.runs
    ])


# --- precision variants ----------------------------------------------------------------


def _variant_name(precision: str) -> str:
    """fp32 / bf16 / int8 are transformers variants; any other precision is a GGUF file on llama.cpp."""
    return precision if precision in ("fp32", "bf16", "int8") else f"{precision} · llama.cpp"


def variants_table(r: VariantReport) -> pd.DataFrame:
    return pd.DataFrame([
        {
            "precision": _variant_name(v.precision),
            "Linear weights": v.weight_dtype + (f" ({v.quantized_linears} layers)" if v.quantized_linears else ""),
            "on disk": human_bytes(v.disk_bytes),
            "in memory": human_bytes(v.memory_bytes),
            "load (s)": round(v.load_seconds, 2),
            "tokens/s": None if v.tokens_per_second is None else round(v.tokens_per_second, 1),
            "mean KL vs fp32 (nats)": round(v.kl_mean, 5),
            "top-1 agreement": f"{v.top1_agreement:.1%}",
        }
        for v in r.rows
    ])


def variants_figure(r: VariantReport) -> go.Figure:
    names = [_variant_name(v.precision) for v in r.rows]
    colours = ["#2563eb", "#7c3aed", "#d97706", "#059669"][: len(names)]
    fig = make_subplots(rows=1, cols=4, subplot_titles=("Memory (MiB)", "Tokens per second", "Mean KL vs fp32 (nats)",
                                                        "Top-1 agreement (%)"))
    fig.add_trace(go.Bar(x=names, y=[v.memory_bytes / 2**20 for v in r.rows], marker_color=colours), 1, 1)
    fig.add_trace(go.Bar(x=names, y=[v.tokens_per_second or 0 for v in r.rows], marker_color=colours), 1, 2)
    fig.add_trace(go.Bar(x=names, y=[v.kl_mean for v in r.rows], marker_color=colours), 1, 3)
    fig.add_trace(go.Bar(x=names, y=[100 * v.top1_agreement for v in r.rows], marker_color=colours), 1, 4)
    fig.update_yaxes(range=[0, 100], row=1, col=4)
    fig.update_layout(showlegend=False, height=320, margin=dict(t=40, b=10, l=10, r=10))
    return fig


def kl_positions_figure(r: VariantReport) -> go.Figure:
    fig = go.Figure()
    colours = {"bf16": "#7c3aed", "int8": "#d97706"}
    ticks = [p.replace("\n", "↵") or "∅" for p in r.pieces]
    for v in r.rows:
        if v.precision == "fp32":
            continue
        fig.add_trace(go.Scatter(x=list(range(len(v.kl))), y=list(v.kl), mode="lines+markers", name=_variant_name(v.precision),
                                 line=dict(color=colours.get(v.precision, "#059669")),
                                 customdata=ticks, hovertemplate="after “%{customdata}”<br>KL %{y:.4f} nats<extra>%{fullData.name}</extra>"))
    fig.update_layout(height=300, margin=dict(t=30, b=10, l=10, r=10), xaxis_title="position in the text",
                      yaxis_title="KL(p_fp32 ‖ p_variant), nats", title=dict(text="Where each variant departs from fp32",
                                                                          font=dict(size=13)))
    return fig


# --- perplexity ------------------------------------------------------------------------


def _surprisal_colour(s: float | None) -> str:
    if s is None:
        return "transparent"
    a = min(max(s, 0.0) / MAX_SURPRISAL, 1.0)
    return f"rgba(220,38,38,{0.08 + 0.82 * a:.2f})"


def surprisal_html(p: Perplexity) -> str:
    """The text, each token's background as red as the model was surprised by it (hover for numbers)."""
    spans = []
    for piece, s in zip(p.pieces, p.surprisal):
        if not piece:
            continue
        title = "not predicted (first token)" if s is None else f"{s:.2f} nats · p = {math.exp(-s):.4f}"
        spans.append(f"<span title='{html.escape(title)}' style='background:{_surprisal_colour(s)};border-radius:2px'>"
                     f"{html.escape(piece)}</span>")
    return ("<div style='font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88rem;line-height:1.9;"
            "white-space:pre-wrap;word-break:break-word;color:#1c1b22;background:#fff;padding:.5rem;"
            f"border:1px solid #e5e7eb;border-radius:6px'>{''.join(spans)}</div>")


def surprisal_legend() -> str:
    cells = "".join(
        f"<span style='background:{_surprisal_colour(s)};padding:0 .5em;color:#1c1b22'>{s:g}</span>"
        for s in (0, 2, 4, 6, 8, 10)
    )
    return f"<div style='font-size:.8rem;margin:.2rem 0 .6rem'>surprisal (nats): {cells} and more</div>"


def perplexity_figure(results: Sequence[Perplexity]) -> go.Figure:
    labels = [p.label for p in results]
    colours = [COLOURS[i % 4] for i in range(len(results))]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Perplexity (per token)", "Bits per byte (comparable across tokenizers)"))
    fig.add_trace(go.Bar(x=labels, y=[p.perplexity for p in results], marker_color=colours), 1, 1)
    fig.add_trace(go.Bar(x=labels, y=[p.bits_per_byte for p in results], marker_color=colours), 1, 2)
    fig.update_layout(showlegend=False, height=300, margin=dict(t=40, b=10, l=10, r=10))
    return fig


def perplexity_view(results: Sequence[Perplexity]) -> None:
    cols = st.columns(len(results))
    for col, p in zip(cols, results):
        col.metric(p.label, f"{p.perplexity:,.2f}", help="exp(mean negative log-likelihood) over the predicted tokens")
        col.caption(f"{p.predicted} tokens predicted · mean surprisal {p.nll_mean:.2f} nats · {p.bits_per_byte:.3f} bits per byte")
    st.plotly_chart(perplexity_figure(results), key="compare_ppl_chart")
    st.html(surprisal_legend())
    for p in results:
        st.markdown(f"**{html.escape(p.label)}** — perplexity {p.perplexity:,.2f}")
        st.html(surprisal_html(p))


# --- Hub ---------------------------------------------------------------------------------


def hub_results_table(found: Sequence[HubModel]) -> pd.DataFrame:
    return pd.DataFrame([
        {
            "model": m.id,
            "downloads": m.downloads,
            "likes": m.likes,
            "parameters": human_count(m.parameters) if m.parameters else "?",
            "size": human_bytes(m.weights_bytes) if m.weights_bytes else "?",
            "license": m.license or "?",
            "gated": "yes" if m.gated else "no",
        }
        for m in found
    ])


def hub_result(m: HubModel, downloaded: bool, key: str) -> bool:
    """One search result with its facts; returns True when its download button was pressed."""
    with st.container(border=True):
        left, right = st.columns([4, 1], vertical_alignment="center")
        gate = " · :orange[gated: needs HF_TOKEN]" if m.gated else ""
        left.markdown(f"**{m.id}**{gate}")
        facts = [
            f"{human_count(m.parameters)} parameters" if m.parameters else "parameters unknown",
            human_bytes(m.weights_bytes) if m.weights_bytes else "size unknown",
            f"license {m.license or '?'}",
            f"{m.downloads:,} downloads",
            f"{m.likes:,} likes",
        ]
        left.caption(" · ".join(facts))
        if downloaded:
            right.success("downloaded", icon=":material/check:")
            return False
        return right.button("Download", key=key, icon=":material/download:")
