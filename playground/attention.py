"""Reductions of attention maps: what the Attention page draws, computed from one forward pass.

Given `AttentionMaps` (playground.passes: weights (layers, heads, T, T), rows sum to 1):

- `head_map(maps, layer, head)`: one head's (T, T) map, or the mean over heads (`head=None`).
- `window(maps, layer, head, start, size)`: rows and columns `start:start+size` of a map, plus
  the mass each row puts `before` and `after` the window, so every row still sums to 1.
  The large views draw a window, so a 2,048-token text stays a 64 x 64 heatmap.
- `thumbnails(maps, cells)`: every map shrunk to at most `cells` x `cells` for the overview.
  The rule: split the T positions into blocks of `block = ceil(T / cells)` (the last one may
  be shorter); a thumbnail cell (I, J) is the MEAN over the query rows i of block I of the
  SUM over the key columns j of block J. Summing along columns keeps each row's total, and
  averaging rows of total 1 gives 1, so every thumbnail row still sums to 1; with block 1
  the thumbnail is the map itself.
- `summarize(maps)`: per-head mean row entropy (bits), the attention sink (mass on the first
  token) per head and per layer. The mean over heads of each layer is `thumbnails(...).layer_means`
  for the overview and `head_map(maps, layer, None)` at full size.
- `token_attention(maps, i, head)`: what token i attends to, in every layer (layers, T).
- `strongest_link(maps, i)`: the head where token i draws most on one other word (the page opens there).
- `encode(lm, text)` / `run(lm, text)` / `analyse(lm, text)`: the text's token ids, checked
  against the model's context (a clear message past it), the maps, and all of the above.

What it leaves out: running the model (playground.passes) and drawing (components.attention).

>>> import torch
>>> from playground.passes import AttentionMaps
>>> w = torch.tensor([[1.0, 0, 0, 0], [.5, .5, 0, 0], [.2, .3, .5, 0], [.1, .2, .3, .4]])
>>> maps = AttentionMaps("demo", (1, 2, 3, 4), ("a", "b", "c", "d"), w.reshape(1, 1, 4, 4), True)
>>> downsample(w, 2).tolist()  # rows 0-1 average [1, 0] and [1, 0]; rows 2-3 average [.5, .5] and [.3, .7]
[[1.0, 0.0], [0.4000000059604645, 0.6000000238418579]]
>>> win = window(maps, 0, 0, start=2, size=2)
>>> win.weights.tolist(), win.before.tolist()
([[0.5, 0.0], [0.30000001192092896, 0.4000000059604645]], [0.5, 0.30000001192092896])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from playground.errors import InputError
from playground.passes import AttentionMaps, attention_maps, check_length, maps_bytes, storage_precision
from playground.loading import LoadedModel
from playground.options import option

DEFAULT_TEXT = (
    "The animal didn't cross the street because it was too tired. "
    "It lay down by the road and fell asleep."
)


@dataclass(frozen=True)
class AttentionSettings:
    """The page's view settings, with the bounds its widgets are built from."""

    window_size: int = option(48, 8, 160, "Tokens shown in the large views (rows and columns)", step=8)
    thumb_cells: int = option(24, 4, 48, "Largest side of each overview thumbnail, in cells", step=4)


# --- input ---------------------------------------------------------------------------------


def encode(lm: LoadedModel, text: str) -> list[int]:
    """The ids the model sees for `text` (with its special tokens: Gemma's <bos>, BERT's [CLS]/[SEP])."""
    if not text or not text.strip():
        raise InputError("The text is empty: type something to see what the model attends to.")
    ids = lm.tokenizer(text, add_special_tokens=True)["input_ids"]
    check_length(lm, len(ids))  # ContextLengthError: "The text is 600 tokens; all-MiniLM-L6-v2's context is 512"
    return list(ids)


def run(lm: LoadedModel, text: str) -> AttentionMaps:
    """One forward pass over `text`, keeping every layer's and head's attention."""
    return attention_maps(lm, encode(lm, text))


# --- checks --------------------------------------------------------------------------------


def _check_layer(maps: AttentionMaps, layer: int) -> None:
    if not 0 <= layer < maps.num_layers:
        raise InputError(f"layer is {layer}; {maps.model_id} has layers 0 to {maps.num_layers - 1}.")


def _check_head(maps: AttentionMaps, head: int | None) -> None:
    if head is not None and not 0 <= head < maps.num_heads:
        raise InputError(f"head is {head}; {maps.model_id} has heads 0 to {maps.num_heads - 1}.")


def _check_token(maps: AttentionMaps, index: int) -> None:
    if not 0 <= index < maps.num_tokens:
        raise InputError(f"token is {index}; the text has tokens 0 to {maps.num_tokens - 1}.")


# --- one map and its window ------------------------------------------------------------------


def head_map(maps: AttentionMaps, layer: int, head: int | None) -> torch.Tensor:
    """One head's map (T, T) in float32, or the mean over the layer's heads when `head` is None."""
    _check_layer(maps, layer)
    _check_head(maps, head)
    if head is None:
        return maps.weights[layer].float().mean(0)  # (heads, T, T) -> (T, T)
    return maps.weights[layer, head].float()  # (T, T)


def clamp_window(n_tokens: int, start: int, size: int) -> tuple[int, int]:
    """(start, stop) of a window of `size` tokens inside 0..n_tokens, moved in if it runs past the end."""
    if size < 1:
        raise InputError(f"window size is {size}; it must be at least 1 token.")
    size = min(size, n_tokens)
    start = min(max(start, 0), n_tokens - size)
    return start, start + size


@dataclass(frozen=True)
class Window:
    """Rows and columns start:stop of one map; before + weights.sum(-1) + after == 1 for every row."""

    layer: int
    head: int | None  # None: the mean over heads
    start: int
    stop: int
    weights: torch.Tensor  # (W, W) float32: weights[r, c] = map[start + r, start + c]
    before: torch.Tensor  # (W,) mass each row puts on tokens 0..start-1
    after: torch.Tensor  # (W,) mass each row puts on tokens stop..T-1 (zero for a decoder)
    labels: tuple[str, ...]  # labels of tokens start..stop-1
    n_tokens: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def window(maps: AttentionMaps, layer: int, head: int | None, start: int, size: int) -> Window:
    _check_layer(maps, layer)
    _check_head(maps, head)
    a, b = clamp_window(maps.num_tokens, start, size)
    rows = maps.weights[layer, :, a:b] if head is None else maps.weights[layer, head, a:b].unsqueeze(0)
    rows = rows.float().mean(0)  # (W, T): the window's query rows, every key column
    labels = maps.labels or maps.tokens
    return Window(
        layer=layer,
        head=head,
        start=a,
        stop=b,
        weights=rows[:, a:b].clone(),  # (W, W)
        before=rows[:, :a].sum(-1),  # (W,)
        after=rows[:, b:].sum(-1),  # (W,)
        labels=tuple(labels[a:b]),
        n_tokens=maps.num_tokens,
    )


# --- the overview: downsampled thumbnails ------------------------------------------------------


def block_for(n_tokens: int, cells: int) -> int:
    """Positions per thumbnail cell so that a side has at most `cells` cells."""
    if cells < 1:
        raise InputError(f"thumbnail cells is {cells}; it must be at least 1.")
    return max(1, math.ceil(n_tokens / cells))


def downsample(m: torch.Tensor, block: int) -> torch.Tensor:
    """(..., T, T) -> (..., S, S), S = ceil(T / block): block-mean along rows, block-sum along columns.

    Rows of the result still sum to what the rows of `m` summed to (1 for attention).
    """
    if block < 1:
        raise InputError(f"block is {block}; it must be at least 1.")
    m = m.float()
    t = m.shape[-1]
    s = math.ceil(t / block)
    pad = s * block - t
    lead = m.shape[:-2]
    if pad:
        m = torch.nn.functional.pad(m, (0, pad, 0, pad))  # zeros: add nothing to any sum
    m = m.reshape(*lead, s, block, s, block)  # (..., S rows, block, S cols, block)
    summed = m.sum(dim=(-3, -1))  # (..., S, S): sum over each block's rows and columns
    rows_in_block = torch.full((s,), float(block))
    rows_in_block[-1] = t - (s - 1) * block  # the last block may hold fewer real rows
    return summed / rows_in_block.reshape(s, 1)  # mean over a block's real rows


@dataclass(frozen=True)
class Thumbnails:
    """Every map shrunk for the overview grid."""

    block: int  # token positions per cell
    n_tokens: int
    weights: torch.Tensor  # (layers, heads, S, S) float32; rows sum to 1

    @property
    def cells(self) -> int:
        return int(self.weights.shape[-1])

    @property
    def layer_means(self) -> torch.Tensor:
        """(layers, S, S): the mean over heads of each layer (downsampling is linear, so order does not matter)."""
        return self.weights.mean(1)

    def span(self, cell: int) -> tuple[int, int]:
        """The token positions [a, b) a row or column cell covers."""
        a = cell * self.block
        return a, min(a + self.block, self.n_tokens)


def thumbnails(maps: AttentionMaps, cells: int = 24) -> Thumbnails:
    block = block_for(maps.num_tokens, cells)
    # one layer at a time: a float16 layer of SmolLM2 at 2,048 tokens is 150 MiB once in float32
    out = torch.stack([downsample(maps.weights[layer], block) for layer in range(maps.num_layers)])
    return Thumbnails(block=block, n_tokens=maps.num_tokens, weights=out)  # (layers, heads, S, S)


# --- summaries --------------------------------------------------------------------------------


def visible_counts(maps: AttentionMaps, layer: int) -> torch.Tensor:
    """(T,) how many tokens each query row can attend to in `layer` (causal, sliding window, or all)."""
    t = maps.num_tokens
    if not maps.is_causal:
        return torch.full((t,), float(t))
    seen = torch.arange(1, t + 1, dtype=torch.float32)
    kinds = maps.layer_kinds or ("full",) * maps.num_layers
    if kinds[layer] == "sliding" and maps.sliding_window:
        seen = seen.clamp(max=maps.sliding_window)
    return seen


@dataclass(frozen=True)
class AttentionSummary:
    """Numbers per head and per layer, from every row of every map."""

    entropy_bits: torch.Tensor  # (layers, heads): mean over query rows of -sum_j p log2 p
    uniform_bits: torch.Tensor  # (layers,): the same mean if every row spread evenly over what it can see
    sink: torch.Tensor  # (layers, heads): mean over query rows 1..T-1 of the weight on token 0
    first_token: str  # the label of token 0 (the sink)

    @property
    def sink_per_layer(self) -> torch.Tensor:
        """(layers,): the sink share averaged over the layer's heads."""
        return self.sink.mean(1)

    @property
    def entropy_per_layer(self) -> torch.Tensor:
        return self.entropy_bits.mean(1)  # (layers,)

    def most_focused(self) -> tuple[int, int, float]:
        """(layer, head, bits) of the head with the lowest mean entropy."""
        k = int(self.entropy_bits.argmin())
        heads = self.entropy_bits.shape[1]
        return k // heads, k % heads, float(self.entropy_bits.flatten()[k])

    def strongest_sink_layer(self) -> tuple[int, float]:
        """(layer, share) of the layer that puts the most on the first token."""
        per_layer = self.sink_per_layer
        k = int(per_layer.argmax())
        return k, float(per_layer[k])


def summarize(maps: AttentionMaps) -> AttentionSummary:
    """Entropy and sink share of every head. Row 0 is left out of the sink share: a decoder's first
    token can only attend to itself."""
    t = maps.num_tokens
    entropy = torch.empty(maps.num_layers, maps.num_heads)
    uniform = torch.empty(maps.num_layers)
    sink = torch.empty(maps.num_layers, maps.num_heads)
    rows = slice(1, None) if t > 1 else slice(0, None)
    for layer in range(maps.num_layers):
        w = maps.weights[layer].float()  # (heads, T, T)
        h = -torch.special.xlogy(w, w).sum(-1) / math.log(2)  # (heads, T): bits per query row
        entropy[layer] = h.mean(-1)
        uniform[layer] = torch.log2(visible_counts(maps, layer)).mean()
        sink[layer] = w[:, rows, 0].mean(-1)  # (heads,)
    labels = maps.labels or maps.tokens
    return AttentionSummary(entropy_bits=entropy, uniform_bits=uniform, sink=sink, first_token=labels[0])


# --- one token -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenAttention:
    """What one query token attends to, in every layer."""

    index: int
    label: str
    head: int | None  # None: the mean over heads
    weights: torch.Tensor  # (layers, T) float32: row `index` of each layer's map; each row sums to 1


def top_keys(row: torch.Tensor, k: int = 3) -> list[tuple[int, float]]:
    """The k positions a row of attention (T,) puts the most weight on, heaviest first."""
    values, idx = torch.topk(row.float(), min(k, int(row.shape[-1])))
    return [(int(i), float(v)) for v, i in zip(values, idx)]


def token_attention(maps: AttentionMaps, index: int, head: int | None = None) -> TokenAttention:
    _check_token(maps, index)
    _check_head(maps, head)
    rows = maps.weights[:, :, index] if head is None else maps.weights[:, head : head + 1, index]  # (layers, h, T)
    labels = maps.labels or maps.tokens
    return TokenAttention(index=index, label=labels[index], head=head, weights=rows.float().mean(1))


def find_token(maps: AttentionMaps, word: str) -> int | None:
    """The first position whose text is `word` (ignoring case and spaces), or None."""
    want = word.strip().lower()
    labels = maps.labels or maps.tokens
    hits = [i for i, lab in enumerate(labels) if lab.strip().lower() == want]
    return hits[0] if hits else None


@dataclass(frozen=True)
class Link:
    """One strong edge of one map: in (layer, head), token `query` puts `weight` on token `key`."""

    layer: int
    head: int
    query: int
    key: int
    weight: float


def strongest_link(maps: AttentionMaps, index: int) -> Link | None:
    """The (layer, head) where token `index` draws most on one token that is not the first, itself,
    or a neighbour (nor, in an encoder, the last: BERT's [SEP]). Sinks and previous-token heads are
    everywhere; this finds a head that links words, e.g. ' it' to ' animal'. None if no token qualifies."""
    _check_token(maps, index)
    w = maps.weights[:, :, index].float().clone()  # (layers, heads, T)
    banned = {0, index, index - 1, index + 1}
    if not maps.is_causal:
        banned.add(maps.num_tokens - 1)
    for j in banned:
        if 0 <= j < maps.num_tokens:
            w[:, :, j] = -1.0
    best = int(torch.argmax(w))
    t, h = maps.num_tokens, maps.num_heads
    layer, rest = divmod(best, h * t)
    head, key = divmod(rest, t)
    weight = float(w[layer, head, key])
    if weight < 0:
        return None
    return Link(layer=layer, head=head, query=index, key=key, weight=weight)


@dataclass(frozen=True)
class Analysis:
    """Everything the page draws from one forward pass; the views only slice it."""

    text: str
    maps: AttentionMaps
    summary: AttentionSummary
    thumbs: Thumbnails

    @property
    def key(self) -> tuple[str, str]:
        """(model id, text): what the forward pass depends on."""
        return self.maps.model_id, self.text


def kept_bytes(lm: LoadedModel, text: str, cells: int = 24) -> int:
    """What `analyse(lm, text, cells)` will keep, in bytes, before it runs: the maps at the precision they
    are kept in, and the thumbnails (the summaries are a few numbers per head). Raises as `analyse` does
    for an empty, too long or too large text."""
    n = len(encode(lm, text))
    layers, heads = lm.num_layers, lm.num_heads
    per_weight = 4 if storage_precision(lm, n) == torch.float32 else 2
    side = min(n, cells)
    return maps_bytes(layers, heads, n, per_weight) + layers * heads * side * side * 4


def analyse(lm: LoadedModel, text: str, cells: int = 24) -> Analysis:
    """One forward pass over `text`, then the summaries and the overview thumbnails."""
    maps = run(lm, text)
    return Analysis(text=text, maps=maps, summary=summarize(maps), thumbs=thumbnails(maps, cells))


# --- words for the page -----------------------------------------------------------------------


def _ranges(xs: list[int]) -> str:
    out, i = [], 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f"{xs[i]}–{xs[j]}")
        i = j + 1
    return ", ".join(out)


def architecture_notes(maps: AttentionMaps) -> list[str]:
    """Sentences saying what kind of attention the maps come from (causal or not, grouped heads, sliding layers)."""
    notes = []
    if maps.is_causal:
        notes.append(
            "**Decoder (causal):** each token sees only itself and the tokens before it, so every map's "
            "upper triangle is zero and the first token can only attend to itself."
        )
    else:
        notes.append(
            "**Encoder (bidirectional):** every token sees every token, before and after it, so the maps "
            "have no empty triangle."
        )
    kv = maps.kv_heads or maps.num_heads
    if kv < maps.num_heads:
        group = maps.num_heads // kv
        shares = "; ".join(
            f"heads {_ranges(list(range(k * group, (k + 1) * group)))} share key/value head {k}" for k in range(kv)
        )
        notes.append(
            f"**Grouped-query attention:** {maps.num_heads} query heads read {kv} key/value head"
            f"{'s' if kv > 1 else ''} ({shares}). Each map here is one *query* head: heads that share keys "
            "still differ, because their queries do."
        )
    kinds = maps.layer_kinds or ()
    if "sliding" in kinds and maps.sliding_window:
        sliding = [i for i, k in enumerate(kinds) if k == "sliding"]
        full = [i for i, k in enumerate(kinds) if k == "full"]
        notes.append(
            f"**Sliding-window layers** {_ranges(sliding)} see only the last {maps.sliding_window:,} tokens; "
            f"layers {_ranges(full)} see the whole text."
            + (" Past that many tokens, their maps are zero far from the diagonal." if maps.num_tokens > maps.sliding_window
               else f" This text is shorter than {maps.sliding_window:,} tokens, so both kinds see everything.")
        )
    return notes
