"""The one forward pass that yields logits and attentions, for the views that look inside.

`forward(lm, ids)` runs the model once (no_grad, eager attention) and returns a
`ForwardPass`. The views reduce it to small results: `next_token_distribution` (the logits
of the last position) and `attention_maps` (every layer and head). `FORWARD_PASSES` counts
calls, so a test can check that moving a slider re-renders from cached logits without
running the model again.

What it leaves out: sampling math (playground.sampling) and rendering (components).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

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
    logits: torch.Tensor | None  # (T, V) float32; None for an encoder
    attentions: torch.Tensor | None  # (layers, heads, T, T) float32, rows sum to 1


def check_length(lm: LoadedModel, n_tokens: int) -> None:
    if n_tokens == 0:
        raise InputError("The text is empty: type something to run the model on.")
    if n_tokens > lm.context_length:
        raise ContextLengthError(
            f"The text is {n_tokens:,} tokens; {lm.spec.name}'s context is {lm.context_length:,}. Shorten it."
        )


def forward(lm: LoadedModel, input_ids: torch.Tensor, attentions: bool = False) -> ForwardPass:
    """Run the model once on `input_ids` (T,) or (1, T)."""
    ids = input_ids.reshape(1, -1)  # (1, T)
    check_length(lm, ids.shape[1])
    _count()
    with torch.no_grad():
        out = lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=attentions)
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
    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(-1)
    fp = forward(lm, ids)
    assert fp.logits is not None, "an encoder has no next-token distribution"
    return NextTokenDistribution(lm.spec.id, tuple(int(i) for i in ids), fp.logits[-1].clone())


@dataclass(frozen=True)
class AttentionMaps:
    """Attention weights of every layer and head over one text."""

    model_id: str
    input_ids: tuple[int, ...]
    tokens: tuple[str, ...]  # display strings, one per position
    weights: torch.Tensor  # (layers, heads, T, T); row i: how much token i draws on each token j
    is_causal: bool  # decoders: row i is zero after column i

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.weights.shape)  # type: ignore[return-value]


def attention_maps(lm: LoadedModel, input_ids: torch.Tensor | list[int]) -> AttentionMaps:
    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(-1)
    fp = forward(lm, ids, attentions=True)
    assert fp.attentions is not None
    tokens = tuple(lm.tokenizer.convert_ids_to_tokens(ids.tolist()))
    return AttentionMaps(lm.spec.id, tuple(ids.tolist()), tokens, fp.attentions, lm.spec.can_generate)
