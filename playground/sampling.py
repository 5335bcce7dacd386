"""Sampling math on logits: temperature, top-k, top-p, min-p, entropy, the draw. No model.

Every function takes logits of shape (..., V): one vector (V,) or a batch (B, V).

The order is the one `transformers` 5 applies in `generate(do_sample=True)`: its
`_get_logits_processor` appends, in this order, `TemperatureLogitsWarper`,
`TopKLogitsWarper`, `TopPLogitsWarper` and `MinPLogitsWarper`, then `_sample` takes
`softmax` and `torch.multinomial`:

    logits -> / temperature -> top-k -> top-p -> min-p -> softmax -> draw

So top-p measures mass in the temperature-scaled distribution after top-k has cut it, and
min-p compares against the top token of what is left. Each filter sets the logits it drops
to -inf; the survivors are renormalised by the final softmax. With `do_sample=False`
transformers applies none of these and takes the argmax; here temperature 0 means the same
thing (all mass on the argmax; on a tie, the lowest id, as `torch.argmax`).

The rules, each the same as the transformers warper unless said:
  - top-k keeps every logit >= the k-th largest (ties at the k-th value are kept, as there).
  - top-p keeps the smallest set of most likely tokens whose mass reaches p (up to a 1e-6
    tolerance for float32 rounding), plus every token tied with the last one kept.
    transformers sorts and cuts, so on an exact tie at the boundary it keeps whichever of
    the tied tokens its sort puts first; here the whole tie is kept. Without ties the two
    keep the same set.
  - min-p drops tokens whose probability is below min_p x the top token's probability.

Bad values raise `InputError` naming the value: a negative temperature, top-p outside
(0, 1], top-k negative or larger than the vocabulary, min-p outside [0, 1].

>>> import torch
>>> probs(torch.tensor([2.0, 1.0, 0.0]), SamplingSettings(temperature=1.0, top_k=2)).round(decimals=3)
tensor([0.7310, 0.2690, 0.0000])

What it leaves out: the model (playground.passes runs it) and the step-by-step walk and
the sampling sweep (playground.stepping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from playground.errors import InputError
from playground.options import shared, validate

TOP_P_TOLERANCE = 1e-6  # mass within this of p counts as reaching p (float32 softmax rounding)
TOP_P_CANDIDATES = 1024  # top-p sorts only this many tokens when they already hold p


@dataclass(frozen=True)
class SamplingSettings:
    """How a token is drawn from the next-token distribution."""

    temperature: float = shared("temperature", 1.0)
    top_k: int = shared("top_k", 0)
    top_p: float = shared("top_p", 1.0)
    min_p: float = shared("min_p", 0.0)
    seed: int = shared("seed", 0)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def check(settings: SamplingSettings, vocab_size: int | None = None) -> SamplingSettings:
    """Validate bounds and types, and top-k against the vocabulary when it is known."""
    validate(settings)
    for name in ("top_k", "seed"):
        value = getattr(settings, name)
        if isinstance(value, float) and not value.is_integer():
            raise InputError(f"{name} is {value}; it must be a whole number.")
    if not math.isfinite(settings.temperature):
        raise InputError(f"temperature is {settings.temperature}; it must be a finite number, 0 or more.")
    if vocab_size is not None and settings.top_k > vocab_size:
        raise InputError(f"top_k is {settings.top_k:,}; this vocabulary has only {vocab_size:,} tokens.")
    return settings


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / T, (..., V) -> (..., V). T = 0 leaves only the argmax finite (greedy)."""
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise InputError(f"temperature is {temperature}; it must be 0 (greedy) or a positive number.")
    if temperature == 0:
        out = torch.full_like(logits, -math.inf)
        idx = torch.argmax(logits, dim=-1, keepdim=True)  # (..., 1): the first maximum, lowest id
        return out.scatter(-1, idx, 0.0)
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits (ties at the k-th value are kept); 0 keeps all. (..., V) -> (..., V)"""
    vocab = logits.shape[-1]
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise InputError(f"top_k is {k!r}; it must be a whole number, 0 (keep all) or more.")
    if k > vocab:
        raise InputError(f"top_k is {k:,}; this vocabulary has only {vocab:,} tokens.")
    if k == 0 or k == vocab:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, -math.inf)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches p, ties included. (..., V) -> (..., V)

    p = 1 keeps all. The mass is summed in float64 and divided by the total, so the cut does
    not move with float32 rounding. Only the TOP_P_CANDIDATES most likely tokens are sorted
    when they already hold p (nearly always); a full sort otherwise.
    """
    if not isinstance(p, (int, float)) or not (0 < p <= 1):
        raise InputError(f"top_p is {p}; it must be above 0 and at most 1 (1 keeps all).")
    if p >= 1.0:
        return logits
    pr = torch.softmax(logits.float(), dim=-1)  # (..., V)
    total = pr.double().sum(dim=-1, keepdim=True)  # (..., 1), 1 up to float32 rounding
    k = min(TOP_P_CANDIDATES, pr.shape[-1])
    sorted_p = torch.topk(pr, k, dim=-1).values  # (..., k), descending
    if k < pr.shape[-1] and not bool((sorted_p.double().sum(-1, keepdim=True) / total >= p - TOP_P_TOLERANCE).all()):
        sorted_p = torch.sort(pr, dim=-1, descending=True).values  # (..., V)
    sp = sorted_p.double()
    before = (torch.cumsum(sp, dim=-1) - sp) / total  # mass of the strictly more likely tokens
    keep_sorted = before < p - TOP_P_TOLERANCE  # a prefix: the set ends at the first token that reaches p
    keep_sorted[..., 0] = True
    n_keep = keep_sorted.sum(dim=-1, keepdim=True)  # (..., 1)
    threshold = sorted_p.gather(-1, n_keep - 1)  # (..., 1): the least likely token kept
    return logits.masked_fill(pr < threshold, -math.inf)  # tokens tied with it stay


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below min_p x the top token's; 0 keeps all. (..., V) -> (..., V)"""
    if not isinstance(min_p, (int, float)) or not (0 <= min_p <= 1):
        raise InputError(f"min_p is {min_p}; it must be between 0 and 1 (0 keeps all).")
    if min_p == 0:
        return logits
    pr = torch.softmax(logits, dim=-1)  # (..., V)
    top = pr.amax(dim=-1, keepdim=True)  # (..., 1)
    return logits.masked_fill(pr < min_p * top, -math.inf)


def filtered_logits(logits: torch.Tensor, s: SamplingSettings) -> torch.Tensor:
    """Temperature, then top-k, top-p, min-p: the logits a token is drawn from. (..., V) -> (..., V)"""
    check(s, int(logits.shape[-1]))
    out = apply_temperature(logits.float(), s.temperature)
    out = top_k_filter(out, int(s.top_k))
    out = top_p_filter(out, s.top_p)
    out = min_p_filter(out, s.min_p)
    return out


def probs(logits: torch.Tensor, s: SamplingSettings) -> torch.Tensor:
    """The renormalised distribution after every filter; sums to 1. (..., V) -> (..., V)"""
    return torch.softmax(filtered_logits(logits, s), dim=-1)


def entropy(p: torch.Tensor) -> float:
    """Shannon entropy in bits of one probability vector (V,)."""
    p = p.double()
    nz = p[p > 0]
    return max(0.0, float(-(nz * torch.log2(nz)).sum()))  # never -0.0


def draw(logits: torch.Tensor, s: SamplingSettings, generator: torch.Generator | None = None) -> int:
    """One token id drawn from (V,) logits under `s`; greedy (argmax) when temperature is 0.

    Seeded by `s.seed` when no generator is given, so the same settings draw the same token.
    """
    check(s, int(logits.shape[-1]))
    if s.greedy:
        return int(torch.argmax(logits))
    g = generator or torch.Generator().manual_seed(int(s.seed))
    return int(torch.multinomial(probs(logits, s), 1, generator=g).item())


@dataclass(frozen=True)
class Shaped:
    """One distribution at each stage, for display. All (V,) float32 and summing to 1 (kept: bool)."""

    settings: SamplingSettings
    model: torch.Tensor  # softmax(logits): the model's own distribution (T = 1, no filter)
    scaled: torch.Tensor  # softmax(logits / T): after temperature, before the filters
    final: torch.Tensor  # after every filter, renormalised: what a token is drawn from
    kept: torch.Tensor  # (V,) bool: the tokens that survive the filters

    @property
    def vocab_size(self) -> int:
        return int(self.final.shape[-1])

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())

    @property
    def kept_mass(self) -> float:
        """The mass the survivors held after temperature, before renormalising (1.0 when none is dropped)."""
        scaled = self.scaled.double()  # over the float32 sum, so that keeping all is exactly 1
        return float(scaled[self.kept].sum() / scaled.sum())

    @property
    def entropy_bits(self) -> float:
        return entropy(self.final)

    @property
    def model_entropy_bits(self) -> float:
        return entropy(self.model)

    @property
    def top_probability(self) -> float:
        return float(self.final.max())


def shape(logits: torch.Tensor, s: SamplingSettings) -> Shaped:
    """The model's distribution, the temperature-scaled one and the filtered one, from (V,) logits."""
    logits = logits.float().reshape(-1)  # (V,)
    filtered = filtered_logits(logits, s)  # (V,), -inf where dropped
    return Shaped(
        settings=s,
        model=torch.softmax(logits, dim=-1),
        scaled=torch.softmax(apply_temperature(logits, s.temperature), dim=-1),
        final=torch.softmax(filtered, dim=-1),
        kept=torch.isfinite(filtered),
    )
