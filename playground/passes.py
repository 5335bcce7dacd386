"""The one forward pass that yields logits and attentions, for the views that look inside.

`forward(lm, ids)` runs the model once (no_grad; eager attention when the weights are asked
for, SDPA otherwise: playground.attend) and returns a
`ForwardPass`. The views reduce it to small results: `next_token_distribution` (the logits
of the last position) and `attention_maps` (every layer and head, captured layer by layer
as the model runs, so long texts do not hold every layer twice). `FORWARD_PASSES` counts
calls, so a test can check that moving a slider re-renders from cached logits without
running the model again.

What it leaves out: sampling math (playground.sampling), reductions of the attention maps
(playground.attention) and rendering (components).
"""

from __future__ import annotations

import contextlib
import inspect as pyinspect  # the standard library; this module was once named inspect too
import math
import threading
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from playground import jobs
from playground.attend import weights_needed
from playground.errors import ContextLengthError, InputError
from playground.loading import LoadedModel

_lock = threading.Lock()
FORWARD_PASSES = 0  # how many times `forward` ran a model in this process


def _count() -> None:
    global FORWARD_PASSES
    with _lock:
        FORWARD_PASSES += 1


@dataclass(frozen=True)
class ForwardPass:
    model_id: str
    input_ids: torch.Tensor  # (T,)
    logits: torch.Tensor | None  # (T, V) float32 ((1, V) with last_only); None for an encoder
    attentions: torch.Tensor | None  # (layers, heads, T, T) float32, rows sum to 1


def check_length(lm: LoadedModel, n_tokens: int) -> None:
    if n_tokens == 0:
        raise InputError("The text is empty: type something to run the model on.")
    if n_tokens > lm.context_length:
        raise ContextLengthError(
            f"The text is {n_tokens:,} tokens; {lm.spec.name}'s context is {lm.context_length:,}. Shorten it."
        )


def _keeps_last_logits(lm: LoadedModel) -> dict:
    """forward() kwargs that compute only the last position's logits, where the model supports it."""
    return {"logits_to_keep": 1} if "logits_to_keep" in pyinspect.signature(lm.model.forward).parameters else {}


def forward(lm: LoadedModel, input_ids: torch.Tensor, attentions: bool = False, last_only: bool = False) -> ForwardPass:
    """Run the model once on `input_ids` (T,) or (1, T).

    last_only=True computes the logits of the last position alone (logits (1, V)): Gemma's full
    (T, 262,144) float32 logits are 1 GiB per 1,000 tokens, and the next token needs one row.
    """
    ids = input_ids.reshape(1, -1)  # (1, T)
    check_length(lm, ids.shape[1])
    _count()
    extra = _keeps_last_logits(lm) if last_only else {}
    with torch.no_grad(), (weights_needed() if attentions else contextlib.nullcontext()), jobs.turn(lm, "a forward pass"):
        out = lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=attentions, **extra)
    logits = getattr(out, "logits", None)
    att = None
    if attentions:
        # tuple of layers x (1, heads, T, T) -> (layers, heads, T, T)
        att = torch.stack([a[0].float() for a in out.attentions])
    return ForwardPass(
        model_id=lm.spec.id,
        input_ids=ids[0],
        logits=None if logits is None else logits[0].float(),
        attentions=att,
    )


@dataclass(frozen=True)
class NextTokenDistribution:
    """The model's raw scores for the token after `input_ids`; every view re-renders from these."""

    model_id: str
    input_ids: tuple[int, ...]
    logits: torch.Tensor  # (V,) float32

    @property
    def vocab_size(self) -> int:
        return int(self.logits.shape[-1])

    def probs(self) -> torch.Tensor:
        """softmax(logits): the untouched distribution, (V,)."""
        return torch.softmax(self.logits, dim=-1)


def next_token_distribution(lm: LoadedModel, input_ids: torch.Tensor | list[int]) -> NextTokenDistribution:
    """The logits after `input_ids`. An entry on another engine (llama.cpp) gives them itself;
    its call counts in FORWARD_PASSES like a transformers pass."""
    if not isinstance(lm, LoadedModel):
        own = getattr(lm, "next_token_distribution", None)
        if own is None:
            from playground.engines import why_not
            from playground.errors import CapabilityError

            raise CapabilityError(why_not(lm.spec, "full_distribution") or f"{lm.spec.name} gives no full distribution.")
        _count()
        return own(input_ids)
    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(-1)
    fp = forward(lm, ids, last_only=True)
    assert fp.logits is not None, "an encoder has no next-token distribution"
    return NextTokenDistribution(lm.spec.id, tuple(int(i) for i in ids), fp.logits[-1].clone())


# --- attention maps --------------------------------------------------------------------
#
# Keeping every map costs layers x heads x T x T numbers: SmolLM2 at 2,048 tokens is 270 maps
# of 4.2M weights, 4.2 GiB in float32. So the maps are captured layer by layer while the model
# runs (a forward hook on each attention module copies its weights into one preallocated
# tensor and drops them), never as the model's tuple of every layer plus a stacked copy, and
# they are kept in float32 up to FLOAT32_BYTES, in float16 up to MAX_BYTES, and refused past
# that with the length that would fit.

FLOAT32_BYTES = 1 << 30  # keep maps in float32 (exact) up to 1 GiB
MAX_BYTES = 5 << 29  # keep them in float16 up to 2.5 GiB; past that the text is refused

_sink: ContextVar["_AttentionSink | None"] = ContextVar("playground_attention_sink", default=None)
_hooked: set[int] = set()  # id() of models whose attention modules carry our hook
_hook_lock = threading.Lock()


@dataclass(frozen=True)
class AttentionMaps:
    """Attention weights of every layer and head over one text.

    `weights[l, h, i, j]` is how much query token i draws on token j in layer l, query head
    h; every row sums to 1. With grouped-query attention (SmolLM2: 9 query heads over 3
    key/value heads; Gemma 3: 4 over 1) there is one map per *query* head: query head h
    uses key/value head h // (heads // kv_heads), so heads that share keys still differ.
    """

    model_id: str
    input_ids: tuple[int, ...]
    tokens: tuple[str, ...]  # the tokenizer's pieces, one per position ("Ġcat", "▁cat", "cat")
    weights: torch.Tensor  # (layers, heads, T, T); row i: how much token i draws on each token j
    is_causal: bool  # decoders: row i is zero after column i
    labels: tuple[str, ...] = ()  # readable text of each token (" cat"), for axes and hover
    kv_heads: int = 0  # key/value heads (= heads without grouped-query attention)
    layer_kinds: tuple[str, ...] = ()  # per layer: "full" or "sliding"
    sliding_window: int | None = None  # tokens a sliding layer sees (itself included)
    precision: str = "float32"  # how the weights are kept: "float32" (exact) or "float16"
    computed_in: str = "float32"  # the dtype the model produced them in ("bfloat16" for a bf16 variant)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.weights.shape)  # type: ignore[return-value]

    @property
    def num_layers(self) -> int:
        return int(self.weights.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.weights.shape[1])

    @property
    def num_tokens(self) -> int:
        return int(self.weights.shape[-1])

    @property
    def nbytes(self) -> int:
        return self.weights.numel() * self.weights.element_size()

    def kv_head_of(self, head: int) -> int:
        """The key/value head query head `head` reads (grouped-query attention)."""
        kv = self.kv_heads or self.num_heads
        return head // max(self.num_heads // kv, 1)


def maps_bytes(layers: int, heads: int, n_tokens: int, bytes_per_weight: int) -> int:
    return layers * heads * n_tokens * n_tokens * bytes_per_weight


def max_tokens_for(layers: int, heads: int, budget: int, bytes_per_weight: int = 2) -> int:
    """The longest text whose maps fit in `budget` bytes."""
    return int(math.isqrt(budget // max(layers * heads * bytes_per_weight, 1)))


def storage_precision(lm: LoadedModel, n_tokens: int, float32_bytes: int = FLOAT32_BYTES,
                      max_bytes: int = MAX_BYTES) -> torch.dtype:
    """float32 if the maps fit in `float32_bytes`, float16 if they fit in `max_bytes`, else InputError."""
    check_length(lm, n_tokens)
    layers, heads = lm.num_layers, lm.num_heads
    if maps_bytes(layers, heads, n_tokens, 4) <= min(float32_bytes, max_bytes):
        return torch.float32
    need = maps_bytes(layers, heads, n_tokens, 2)
    if need <= max_bytes:
        return torch.float16
    fit = max_tokens_for(layers, heads, max_bytes)
    raise InputError(
        f"The text is {n_tokens:,} tokens; {lm.spec.name}'s {layers * heads:,} attention maps at that length take "
        f"{need / 2**30:,.1f} GiB even at half precision, more than the {max_bytes / 2**30:,.1f} GiB kept per model. "
        f"Up to {fit:,} tokens fit: shorten the text."
    )


class _AttentionSink:
    """Receives each layer's weights (1, heads, T, T) during one forward pass, in layer order."""

    def __init__(self, layers: int, heads: int, n_tokens: int, dtype: torch.dtype):
        self.weights = torch.empty((layers, heads, n_tokens, n_tokens), dtype=dtype)  # (layers, heads, T, T)
        self.filled = 0
        self.ok = True
        self.source_dtype: torch.dtype | None = None

    def put(self, w: torch.Tensor) -> None:
        if w is None or not self.ok:
            return
        if self.filled >= self.weights.shape[0] or tuple(w.shape[1:]) != tuple(self.weights.shape[1:]):
            self.ok = False  # not the per-layer maps we expected: fall back to output_attentions
            return
        self.source_dtype = w.dtype
        self.weights[self.filled].copy_(w[0])  # (heads, T, T), cast to the storage dtype
        self.filled += 1


def _hook(module, args, output) -> None:
    sink = _sink.get()
    if sink is not None and isinstance(output, tuple) and len(output) > 1 and torch.is_tensor(output[1]):
        sink.put(output[1].detach())


def _attention_modules(model) -> list:
    """The modules whose output[1] is a layer's attention weights, in layer order."""
    from transformers.utils.output_capturing import OutputRecorder

    spec = (getattr(model, "_can_record_outputs", None) or {}).get("attentions")
    if spec is None:
        return []
    specs = spec if isinstance(spec, list) else [spec]
    found = []
    for sp in specs:
        if isinstance(sp, OutputRecorder):
            if sp.index != 1 or sp.target_class is None:
                return []
            found += [m for name, m in model.named_modules() if isinstance(m, sp.target_class)
                      and (sp.layer_name is None or f".{sp.layer_name.strip('.')}." in f".{name}.")]
        elif isinstance(sp, type):
            found += [m for m in model.modules() if isinstance(m, sp)]
        else:
            return []
    return found


def _install_hooks(model) -> bool:
    """Hook every attention module once per model (idle unless a sink is set in this thread)."""
    if id(model) in _hooked:
        return True
    with _hook_lock:
        if id(model) in _hooked:
            return True
        modules = _attention_modules(model)
        if not modules:
            return False
        for m in modules:
            m.register_forward_hook(_hook)
        _hooked.add(id(model))
        return True


def _labels(tokenizer, ids: list[int], pieces: list[str]) -> tuple[str, ...]:
    out = []
    for i, piece in zip(ids, pieces):
        text = tokenizer.decode([i])
        if not text or "\ufffd" in text:  # a byte piece of a multi-byte character
            text = piece
        out.append(text.replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍"))
    return tuple(out)


def _layer_facts(lm: LoadedModel) -> tuple[int, tuple[str, ...], int | None]:
    cfg = getattr(lm.model.config, "text_config", None) or lm.model.config
    heads = lm.num_heads
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
    types = getattr(cfg, "layer_types", None)
    window = getattr(cfg, "sliding_window", None)
    if types:
        kinds = tuple("sliding" if "sliding" in str(t) else "full" for t in types)
    else:
        kinds = ("full",) * lm.num_layers
    if "sliding" not in kinds:
        window = None
    return kv, kinds, (int(window) if window else None)


def _run_for_attentions(lm: LoadedModel, ids: torch.Tensor) -> None:
    """One forward pass whose output is dropped; only the last position's logits are computed."""
    x = ids.reshape(1, -1)  # (1, T)
    kwargs = _keeps_last_logits(lm)  # Gemma's (T, 262,144) logits at 2,048 tokens would be 2 GiB
    _count()
    with torch.no_grad(), weights_needed(), jobs.turn(lm, "attention maps"):  # exact eager weights, this thread only
        lm.model(input_ids=x, attention_mask=torch.ones_like(x), **kwargs)


def attention_maps(lm: LoadedModel, input_ids: torch.Tensor | list[int], float32_bytes: int = FLOAT32_BYTES,
                   max_bytes: int = MAX_BYTES) -> AttentionMaps:
    """Every layer's and head's attention weights over `input_ids`, from one forward pass.

    Raises ContextLengthError past the model's context, InputError past `max_bytes` of maps.
    """
    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(-1)  # (T,)
    n = int(ids.shape[0])
    dtype = storage_precision(lm, n, float32_bytes, max_bytes)
    weights, computed_in = None, None
    if _install_hooks(lm.model):
        sink = _AttentionSink(lm.num_layers, lm.num_heads, n, dtype)
        token = _sink.set(sink)
        try:
            _run_for_attentions(lm, ids)  # the hooks fill sink.weights layer by layer
        finally:
            _sink.reset(token)
        if sink.ok and sink.filled == lm.num_layers:
            weights, computed_in = sink.weights, sink.source_dtype
    if weights is None:  # an architecture the hooks do not fit: the model's own tuple
        fp = forward(lm, ids, attentions=True)
        assert fp.attentions is not None
        weights = fp.attentions.to(dtype)
        computed_in = next(lm.model.parameters()).dtype
    pieces = lm.tokenizer.convert_ids_to_tokens(ids.tolist())
    kv, kinds, window = _layer_facts(lm)
    return AttentionMaps(
        model_id=lm.spec.id,
        input_ids=tuple(ids.tolist()),
        tokens=tuple(pieces),
        weights=weights,
        is_causal=lm.spec.can_generate,
        labels=_labels(lm.tokenizer, ids.tolist(), pieces),
        kv_heads=kv,
        layer_kinds=kinds,
        sliding_window=window,
        precision=str(dtype).removeprefix("torch."),
        computed_in=str(computed_in or torch.float32).removeprefix("torch."),
    )
