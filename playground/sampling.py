"""Sampling math on a vector of logits: temperature, top-k, top-p, min-p, entropy. No model.

The order is the one `transformers` applies in `generate` (its logits processors /
warpers, in the order `GenerationMixin._get_logits_processor` builds them):

    logits -> / temperature -> top-k -> top-p -> min-p -> softmax -> draw

Each filter sets the logits it drops to -inf; the survivors are renormalised by the final
softmax. Temperature 0 means greedy: all mass on the argmax (ties: the lowest id, as
`torch.argmax`).

>>> import torch
>>> probs(torch.tensor([2.0, 1.0, 0.0]), SamplingSettings(temperature=1.0, top_k=2)).round(decimals=3)
tensor([0.7310, 0.2690, 0.0000])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from playground.errors import InputError
from playground.options import option, validate


@dataclass(frozen=True)
class SamplingSettings:
    """How a token is drawn from the next-token distribution."""

    temperature: float = option(1.0, 0.0, 5.0, "0 is greedy; below 1 sharpens, above 1 flattens", 0.05)
    top_k: int = option(0, 0, 1_000_000, "keep the k most likely tokens; 0 keeps all", 1)
    top_p: float = option(1.0, 0.0, 1.0, "keep the smallest set whose mass reaches p; 1 keeps all", 0.01)
    min_p: float = option(0.0, 0.0, 1.0, "drop tokens below min_p x the top token's probability; 0 keeps all", 0.01)
    seed: int = option(0, 0, 2**31 - 1, "random seed for the draw", 1)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def check(settings: SamplingSettings, vocab_size: int | None = None) -> SamplingSettings:
    """Validate bounds, and top-k against the vocabulary when it is known."""
    validate(settings)
    if vocab_size is not None and settings.top_k > vocab_size:
        raise InputError(f"top_k is {settings.top_k:,}; this vocabulary has only {vocab_size:,} tokens.")
    if settings.top_p == 0:
        raise InputError("top_p is 0, which keeps no token; use a value above 0 (1 keeps all).")
    return settings


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / T; T = 0 leaves only the argmax finite (greedy)."""
    if temperature < 0:
        raise InputError(f"temperature is {temperature}; it must be 0 (greedy) or more.")
    if temperature == 0:
        out = torch.full_like(logits, -math.inf)
        idx = int(torch.argmax(logits))
        out[idx] = 0.0
        return out
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits (ties at the k-th value are kept); 0 keeps all."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < kth, -math.inf)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability mass reaches p.

    Tokens tied with the last one kept are kept too. p = 1 keeps all.
    """
    if p >= 1.0:
        return logits
    pr = torch.softmax(logits, dim=-1)  # (V,)
    sorted_p, order = torch.sort(pr, descending=True)
    cum = torch.cumsum(sorted_p, dim=-1)
    # the first index at which the cumulative mass reaches p (with a float tolerance)
    n_keep = int(torch.searchsorted(cum, torch.tensor(p - 1e-9, dtype=cum.dtype)).item()) + 1
    n_keep = min(max(n_keep, 1), logits.shape[-1])
    threshold = sorted_p[n_keep - 1]
    return logits.masked_fill(pr < threshold, -math.inf)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below min_p times the top token's; 0 keeps all."""
    if min_p <= 0:
        return logits
    pr = torch.softmax(logits, dim=-1)
    return logits.masked_fill(pr < min_p * pr.max(), -math.inf)


def filtered_logits(logits: torch.Tensor, s: SamplingSettings) -> torch.Tensor:
    """Temperature, then top-k, top-p, min-p: the logits a token is drawn from. (V,) -> (V,)"""
    out = apply_temperature(logits.float(), s.temperature)
    out = top_k_filter(out, s.top_k)
    out = top_p_filter(out, s.top_p)
    out = min_p_filter(out, s.min_p)
    return out


def probs(logits: torch.Tensor, s: SamplingSettings) -> torch.Tensor:
    """The renormalised distribution after every filter; sums to 1. (V,) -> (V,)"""
    return torch.softmax(filtered_logits(logits, s), dim=-1)


def entropy(p: torch.Tensor) -> float:
    """Shannon entropy in bits of a probability vector."""
    nz = p[p > 0]
    return float(-(nz * torch.log2(nz)).sum())


def draw(logits: torch.Tensor, s: SamplingSettings, generator: torch.Generator | None = None) -> int:
    """One token id drawn under `s`; greedy when temperature is 0. Seeded by `s.seed` if no generator."""
    if s.greedy:
        return int(torch.argmax(logits))
    g = generator or torch.Generator().manual_seed(s.seed)
    return int(torch.multinomial(probs(logits, s), 1, generator=g).item())
