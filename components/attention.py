"""Plotly figures (and one HTML snippet) for the Attention page.

Every figure takes result dataclasses from playground.attention and draws them; nothing here
computes attention or loads a model. Heatmaps carry the real weights in `z` (what a test reads
back); the colour scale is a square-root ramp built from colour stops, so small weights stay
visible next to the attention sink while the colour bar still reads in real weights.

- `overview_figure`: the layers x heads grid of thumbnails, one heatmap with gaps, plus one
  invisible marker per map that makes the grid clickable (Streamlit selects points, not heatmap cells).
- `head_figure`: one map's window, token labels on both axes, an "earlier" column with the
  mass on tokens before the window (and "later" for an encoder), hover with both tokens and the weight.
- `token_layers_figure` and `token_html`: what one token attends to, across layers and as coloured text.
- `layer_means_figure`, `entropy_figure`, `sink_figure`: the summaries.
"""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go
import torch

from playground.attention import AttentionSummary, Thumbnails, TokenAttention, Window

BASE = "Blues"
ACCENT = "#d62728"


def colorscale(scale: str = "sqrt", steps: int = 24) -> list[list]:
    """Colour stops over weights 0..1: linear, or colour = Blues(sqrt(weight))."""
    if scale == "linear":
        return pc.make_colorscale(pc.sequential.Blues)
    xs = [(i / steps) ** 2 for i in range(steps + 1)]  # weights whose square roots are evenly spaced
    colours = pc.sample_colorscale(BASE, [math.sqrt(x) for x in xs])
    return [[x, c] for x, c in zip(xs, colours)]


def _colorbar(scale: str) -> dict:
    ticks = [0, 0.1, 0.25, 0.5, 0.75, 1.0]
    return dict(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks], thickness=10, len=0.6)


def label_text(label: str, limit: int = 14) -> str:
    """A token label safe for plotly text (which reads HTML: '<bos>' would vanish)."""
    shown = label if len(label) <= limit else label[: limit - 1] + "…"
    return html.escape(shown.replace(" ", "␣") if shown.strip() == "" else shown)


def _tile(a: np.ndarray, gap: int = 1) -> np.ndarray:
    """(R, C, S, S) -> one (R*(S+gap)-gap, C*(S+gap)-gap) image, NaN in the gaps."""
    r, c, s, _ = a.shape
    out = np.full((r * (s + gap) - gap, c * (s + gap) - gap), np.nan, dtype=np.float32)
    for i in range(r):
        for j in range(c):
            out[i * (s + gap) : i * (s + gap) + s, j * (s + gap) : j * (s + gap) + s] = a[i, j]
    return out


def _grid_layout(fig: go.Figure, height: int, title: str | None) -> None:
    fig.update_layout(
        height=height, margin=dict(l=50, r=10, t=50 if title else 40, b=10), title=title,
        plot_bgcolor="rgba(0,0,0,0)", hovermode="closest", hoverdistance=-1, clickmode="event+select",
        dragmode=False, showlegend=False,
    )


def overview_figure(thumbs: Thumbnails, summary: AttentionSummary | None = None,
                    selected: tuple[int, int | None] | None = None, scale: str = "sqrt",
                    title: str | None = None, width_hint: int = 1100) -> go.Figure:
    """Every (layer, head) map shrunk to cells x cells, in one grid.

    The longer of layers and heads runs across (SmolLM2: 30 layers across, 9 heads down; MiniLM:
    12 heads across, 6 layers down) so the grid fits a page; `width_hint` (pixels) sizes the rows
    so that thumbnails come out about square.
    """
    w = thumbs.weights.numpy()  # (layers, heads, S, S)
    layers, heads, s, _ = w.shape
    layers_across = layers >= heads
    grid = w.transpose(1, 0, 2, 3) if layers_across else w  # (down, across, S, S)
    down, across = grid.shape[:2]
    step = s + 1
    z = _tile(grid)
    fig = go.Figure(go.Heatmap(
        z=z, x0=0, dx=1, y0=0, dy=1, zmin=0, zmax=1, colorscale=colorscale(scale), hoverinfo="skip",
        colorbar=_colorbar(scale), name="maps",
    ))

    def place(layer: int, head: int) -> tuple[int, int]:  # (column, row) of a thumbnail
        return (layer, head) if layers_across else (head, layer)

    # one invisible marker at the centre of each thumbnail: the hover and click target
    cx, cy, text, custom = [], [], [], []
    for layer in range(layers):
        for head in range(heads):
            col, row = place(layer, head)
            cx.append(col * step + (s - 1) / 2)
            cy.append(row * step + (s - 1) / 2)
            custom.append([layer, head])
            line = f"layer {layer} · head {head}"
            if summary is not None:
                line += (f"<br>on the first token: {summary.sink[layer, head]:.0%}"
                         f"<br>entropy: {summary.entropy_bits[layer, head]:.2f} bits")
            text.append(line + "<br><i>click to open it large</i>")
    fig.add_trace(go.Scatter(
        x=cx, y=cy, mode="markers", marker=dict(size=8, opacity=0), customdata=custom, text=text,
        hovertemplate="%{text}<extra></extra>", name="pick",
        selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
    ))
    if selected is not None and selected[1] is not None:
        col, row = place(*selected)
        fig.add_shape(type="rect", x0=col * step - 0.9, x1=col * step + s - 0.1, y0=row * step - 0.9,
                      y1=row * step + s - 0.1, line=dict(color=ACCENT, width=2))
    names_across = [f"L{i}" for i in range(across)] if layers_across else [f"h{i}" for i in range(across)]
    names_down = [f"h{i}" for i in range(down)] if layers_across else [f"L{i}" for i in range(down)]
    every = 1 if across <= 16 else 2
    fig.update_xaxes(tickvals=[c * step + (s - 1) / 2 for c in range(0, across, every)], ticktext=names_across[::every],
                     side="top", showgrid=False, zeroline=False, range=[-1, across * step - 1], tickfont=dict(size=10),
                     title=dict(text="layer" if layers_across else "head", standoff=4, font=dict(size=11)))
    fig.update_yaxes(tickvals=[r * step + (s - 1) / 2 for r in range(down)], ticktext=names_down, autorange="reversed",
                     showgrid=False, zeroline=False, tickfont=dict(size=10),
                     title=dict(text="head" if layers_across else "layer", standoff=4, font=dict(size=11)))
    thumb_px = min(max((width_hint - 120) / across, 14), 70)
    _grid_layout(fig, height=int(90 + down * thumb_px), title=title)
    return fig


def layer_means_figure(thumbs: Thumbnails, scale: str = "sqrt", per_row: int = 6) -> go.Figure:
    """The mean over heads of every layer, as a grid of thumbnails (layer 0 top left)."""
    means = thumbs.layer_means.numpy()  # (layers, S, S)
    layers, s, _ = means.shape
    rows = math.ceil(layers / per_row)
    padded = np.full((rows * per_row, s, s), np.nan, dtype=np.float32)
    padded[:layers] = means
    grid = padded.reshape(rows, per_row, s, s)
    gap = max(2, s // 5)  # room for each layer's name above its thumbnail
    step = s + gap
    z = _tile(grid, gap)
    z = np.vstack([np.full((gap, z.shape[1]), np.nan, dtype=np.float32), z])  # a gap above the first row too
    layer_of = np.full(z.shape, -1.0, dtype=np.float32)
    for layer in range(layers):
        r, c = divmod(layer, per_row)
        layer_of[gap + r * step : gap + r * step + s, c * step : c * step + s] = layer
    fig = go.Figure(go.Heatmap(z=z, zmin=0, zmax=1, colorscale=colorscale(scale), colorbar=_colorbar(scale),
                               customdata=layer_of, hovertemplate="layer %{customdata:.0f}<br>weight %{z:.3f}<extra></extra>"))
    for layer in range(layers):
        r, c = divmod(layer, per_row)
        fig.add_annotation(x=c * step + (s - 1) / 2, y=r * step + (gap - 1) / 2, text=f"L{layer}", showarrow=False,
                           font=dict(size=10))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", scaleratio=1)
    fig.update_layout(height=40 + rows * (120 if per_row > 3 else 150), margin=dict(l=10, r=10, t=10, b=10),
                      plot_bgcolor="rgba(0,0,0,0)")
    return fig


def _ticks(start: int, labels: tuple[str, ...], max_ticks: int = 64) -> tuple[list[int], list[str]]:
    every = max(1, math.ceil(len(labels) / max_ticks))
    vals = list(range(0, len(labels), every))
    return vals, [f"{label_text(labels[v])} ·{start + v}" for v in vals]


def head_figure(win: Window, scale: str = "sqrt", title: str | None = None) -> go.Figure:
    """One map's window: query tokens down, the tokens they draw on across; hover shows both and the weight."""
    w = win.weights.numpy()  # (W, W)
    n = win.size
    q = np.array([f"·{win.start + r} {html.escape(win.labels[r])}" for r in range(n)], dtype=object)
    custom = np.stack(np.broadcast_arrays(q[:, None], q[None, :]), axis=-1)  # (W, W, 2): query, key
    fig = go.Figure(go.Heatmap(
        z=w, x=list(range(n)), y=list(range(n)), zmin=0, zmax=1, colorscale=colorscale(scale), colorbar=_colorbar(scale),
        customdata=custom, name="window",
        hovertemplate="query %{customdata[0]}<br>attends to %{customdata[1]}<br>weight %{z:.4f}<extra></extra>",
    ))
    extra_vals, extra_text = [], []
    if win.start > 0:
        side = win.before.numpy().reshape(-1, 1)  # (W, 1)
        fig.add_trace(go.Heatmap(
            z=side, x=[-2], y=list(range(n)), zmin=0, zmax=1, colorscale=colorscale(scale), showscale=False,
            customdata=q.reshape(-1, 1), name="earlier",
            hovertemplate=f"query %{{customdata}}<br>attends to the {win.start:,} tokens before the window"
                          "<br>weight %{z:.4f}<extra></extra>",
        ))
        extra_vals.append(-2)
        extra_text.append(f"<b>earlier ({win.start:,})</b>")
    if win.stop < win.n_tokens and float(win.after.max()) > 0:  # an encoder also looks ahead
        side = win.after.numpy().reshape(-1, 1)
        fig.add_trace(go.Heatmap(
            z=side, x=[n + 1], y=list(range(n)), zmin=0, zmax=1, colorscale=colorscale(scale), showscale=False,
            customdata=q.reshape(-1, 1), name="later",
            hovertemplate=f"query %{{customdata}}<br>attends to the {win.n_tokens - win.stop:,} tokens after the window"
                          "<br>weight %{z:.4f}<extra></extra>",
        ))
        extra_vals.append(n + 1)
        extra_text.append(f"<b>later ({win.n_tokens - win.stop:,})</b>")
    vals, text = _ticks(win.start, win.labels)
    font = 11 if n <= 32 else 9 if n <= 64 else 8
    fig.update_xaxes(tickvals=extra_vals + vals, ticktext=extra_text + text, tickangle=-60, side="top",
                     tickfont=dict(size=font), showgrid=False, zeroline=False, title=None)
    fig.update_yaxes(tickvals=vals, ticktext=text, autorange="reversed", tickfont=dict(size=font), showgrid=False,
                     zeroline=False, scaleanchor="x", scaleratio=1, constrain="domain")
    fig.update_xaxes(constrain="domain")
    side = min(900, max(420, 200 + n * 13))
    fig.update_layout(height=side, margin=dict(l=10, r=10, t=40 if title else 10, b=10), title=title,
                      plot_bgcolor="rgba(0,0,0,0)")
    return fig


def token_layers_figure(ta: TokenAttention, start: int, stop: int, labels: tuple[str, ...],
                        scale: str = "sqrt", causal: bool = False, layer: int | None = None) -> go.Figure:
    """Layers down, the window's tokens across: how much token `ta.index` draws on each, layer by layer.

    For a decoder the columns stop at the token itself: everything after it is zero.
    """
    w = ta.weights  # (layers, T)
    if causal and start <= ta.index < stop:
        labels = labels[: ta.index + 1 - start]
        stop = ta.index + 1
    layers = int(w.shape[0])
    inside = w[:, start:stop].numpy()  # (layers, W)
    before = w[:, :start].sum(-1).numpy()  # (layers,)
    keys = np.array([f"·{start + c} {html.escape(labels[c])}" for c in range(stop - start)], dtype=object)
    fig = go.Figure(go.Heatmap(
        z=inside, x=list(range(stop - start)), y=list(range(layers)), zmin=0, zmax=1, colorscale=colorscale(scale),
        colorbar=_colorbar(scale), customdata=np.broadcast_to(keys, inside.shape), name="layers",
        hovertemplate="layer %{y}<br>attends to %{customdata}<br>weight %{z:.4f}<extra></extra>",
    ))
    xv, xt = [], []
    if start > 0:
        fig.add_trace(go.Heatmap(z=before.reshape(-1, 1), x=[-2], y=list(range(layers)), zmin=0, zmax=1,
                                 colorscale=colorscale(scale), showscale=False, name="earlier",
                                 hovertemplate="layer %{y}<br>tokens before the window<br>weight %{z:.4f}<extra></extra>"))
        xv, xt = [-2], [f"<b>earlier ({start:,})</b>"]
    vals, text = _ticks(start, labels)
    if start <= ta.index < stop:  # outline the token itself
        fig.add_shape(type="rect", x0=ta.index - start - 0.5, x1=ta.index - start + 0.5, y0=-0.5, y1=layers - 0.5,
                      line=dict(color=ACCENT, width=1.5))
    fig.update_xaxes(tickvals=xv + vals, ticktext=xt + text, tickangle=-60, side="top", showgrid=False, zeroline=False,
                     tickfont=dict(size=10 if len(labels) <= 48 else 8))
    if layer is not None:  # the layer the other views show
        fig.add_shape(type="rect", x0=(-2.5 if start > 0 else -0.5), x1=stop - start - 0.5, y0=layer - 0.5,
                      y1=layer + 0.5, line=dict(color=ACCENT, width=1, dash="dot"))
    fig.update_yaxes(title="layer", autorange="reversed", showgrid=False, zeroline=False, dtick=1 if layers <= 18 else 2)
    fig.update_layout(height=min(900, 170 + layers * 18), margin=dict(l=10, r=10, t=10, b=10),
                      plot_bgcolor="rgba(0,0,0,0)")
    return fig


def token_html(labels: tuple[str, ...], weights: torch.Tensor, start: int, index: int, before: float = 0.0,
               after: float = 0.0, scale: str = "sqrt") -> str:
    """The window's tokens as text, each shaded by how much token `index` draws on it (one row of a map)."""
    colours = colorscale(scale)
    xs = [c[0] for c in colours]
    parts = []
    if before > 0:
        parts.append(f'<span style="color:#666">[{before:.0%} on earlier tokens]</span> ')
    for k, (label, wt) in enumerate(zip(labels, weights.tolist())):
        pos = start + k
        i = min(range(len(xs)), key=lambda j: abs(xs[j] - wt))  # the nearest colour stop
        fg = "white" if wt > 0.25 else "black"
        border = f"outline:2px solid {ACCENT};" if pos == index else ""
        text = html.escape(label.replace("\n", "↵")) or "␣"
        parts.append(
            f'<span title="·{pos} {html.escape(label)}: {wt:.4f}" style="background:{colours[i][1]};color:{fg};'
            f'{border}display:inline-block;padding:1px 2px;margin:1px;border-radius:3px;white-space:pre;line-height:1.5">{text}</span>'
        )
    if after > 0:
        parts.append(f' <span style="color:#666">[{after:.0%} on later tokens]</span>')
    return '<div style="font-family:monospace;font-size:0.95rem">' + "".join(parts) + "</div>"


def entropy_figure(summary: AttentionSummary) -> go.Figure:
    """Mean row entropy of every head, in bits; hover also shows what spreading evenly would give."""
    e = summary.entropy_bits.numpy()  # (layers, heads)
    layers, heads = e.shape
    uniform = np.broadcast_to(summary.uniform_bits.numpy().reshape(-1, 1), e.shape)
    fig = go.Figure(go.Heatmap(
        z=e, x=[f"h{h}" for h in range(heads)], y=list(range(layers)), colorscale="Viridis",
        customdata=uniform, colorbar=dict(title="bits", thickness=10),
        hovertemplate="layer %{y} · %{x}<br>entropy %{z:.2f} bits<br>(spread evenly: %{customdata:.2f})<extra></extra>",
    ))
    fig.update_yaxes(title="layer", autorange="reversed", dtick=1 if layers <= 18 else 2)
    fig.update_layout(height=min(700, 120 + layers * 18), margin=dict(l=10, r=10, t=10, b=10))
    return fig


def sink_figure(summary: AttentionSummary) -> go.Figure:
    """Share of attention on the first token per layer: the mean over heads (line) and each head (dots)."""
    s = summary.sink.numpy()  # (layers, heads)
    layers, heads = s.shape
    fig = go.Figure()
    for h in range(heads):
        fig.add_trace(go.Scatter(x=list(range(layers)), y=s[:, h], mode="markers", marker=dict(size=5, opacity=0.45),
                                 name=f"h{h}", hovertemplate=f"layer %{{x}} · h{h}: %{{y:.1%}}<extra></extra>",
                                 showlegend=False))
    fig.add_trace(go.Scatter(x=list(range(layers)), y=summary.sink_per_layer.numpy(), mode="lines+markers",
                             line=dict(color=ACCENT, width=2), name="mean over heads",
                             hovertemplate="layer %{x}: %{y:.1%} (mean over heads)<extra></extra>"))
    fig.update_xaxes(title="layer", dtick=1 if layers <= 18 else 2)
    fig.update_yaxes(title=f"share on {label_text(summary.first_token)}", range=[0, 1.02], tickformat=".0%")
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h", y=1.1))
    return fig
