"""Attribution: how much each input token contributed to one next token.

For a prompt (token ids) and a target next token of a transformers causal LM, each method gives
one score per input token, in the units of an objective f of the next-token logits at the last
position. f is the target's **log-probability** (natural log, nats); with a contrast token it is
log p(target) - log p(contrast), the same as logit(target) - logit(contrast) (the softmax's
normaliser cancels): "why this token rather than that one".

- **gradient x input** (`gradient_x_input`): score_t = sum_h df/de[t, h] * e[t, h], where e (T, H)
  is what the decoder reads, the output of `get_input_embeddings()` (Gemma's scaled embeddings).
  One forward and one backward pass. A first-order (Taylor) reading; its scores need not add up to
  anything.
- **integrated gradients** (`integrated_gradients`, Sundararajan et al. 2017): the gradient
  along the straight path from a baseline e' to e, integrated and times (e - e'), so the scores add
  up to f(e) - f(e') (completeness) up to the error of the integral's quadrature. `steps` is the
  number of points on the path where the gradient is taken (0 and 1 included): a quarter evenly
  spaced, the rest added where the trapezoid rule disagrees most with the change of f between
  neighbouring points (adaptive trapezoid). f along these models' paths is smooth in places and
  jagged in others (Gemma 3 on a 45-token text: smooth up to a = 0.5, jumps of several nats
  between 0.5 and 0.8), and evenly spaced steps miss the jumps: 64 of them left a gap of 3.0 nats
  out of 16.3 where the adaptive 64 left 0.06. The result keeps the measured gap
  (`Attribution.completeness_gap`) and the points (`Attribution.path`); the page shows both.
  The baseline (`BASELINES`: "pad", the one there is) replaces every token of the text by the
  tokenizer's pad token (Gemma `<pad>`, SmolLM2 `<|im_end|>`), except the first token and special
  tokens (Gemma's `<bos>`, a chat template's markers), which stay as they are and so get 0. The
  first token is kept because it is these models' attention sink: moving it moves the whole
  model through sharp transitions (SmolLM2's slope df/da peaked at 5,668 nats on the path that
  replaced it, at 89 on the one that keeps it, where 201 evenly spaced points close the gap to
  0.01 nats). The zero embedding is not offered: for models whose blocks have no biases (SmolLM2,
  Gemma) it gives logits 0, the uniform distribution, but RMSNorm makes the model almost blind
  to scale, so f jumps between a = 0 and a = 1e-4 (SmolLM2: -10.8 to -21.1 nats), a step no
  quadrature resolves, and the gradient at a = 0 itself is NaN.
- **attention rollout** (`attention_rollout`, Abnar & Zuidema 2020): each layer's attention
  averaged over heads, mixed half and half with the identity for the residual connection
  (0.5 A + 0.5 I), multiplied from the first layer up; the last position's row says how much of
  what the last position reads comes, through the layers, from each input token. It uses the
  model's exact eager attention weights (playground.passes.attention_maps, inside
  playground.attend.weights_needed()); every other pass here runs SDPA. Rollout does not depend
  on the target: it is the same for every next token and has no contrastive form.

Memory and time: the gradient methods keep every layer's activations for the backward pass, so
the text is bounded by `MAX_TOKENS`, and integrated gradients by `MAX_TOKEN_STEPS` (tokens x
steps, its forward and backward work). The shared model is never changed: gradients are taken
with `torch.autograd.grad` with respect to the embeddings only, so no parameter's `.grad` is
written and two sessions can attribute at once.

What it leaves out: other gradient methods (SmoothGrad, DeepLIFT, LRP, attention x gradient),
attribution to layers or neurons, target tokens further than the next one (one target at the last
position), the dynamic int8 variants (their quantized Linear layers have no backward), the
llama.cpp and remote engines (no weights in PyTorch), and rendering (components.attribution).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from playground.errors import CapabilityError, InputError
from playground.limits import Limit
from playground.loading import LoadedModel
from playground.options import option, validate
from playground.passes import _keeps_last_logits, _labels, attention_maps, check_length

METHODS = ("gradient_x_input", "integrated_gradients", "attention_rollout")
METHOD_NAMES = {"gradient_x_input": "gradient × input", "integrated_gradients": "integrated gradients",
                "attention_rollout": "attention rollout"}
BASELINES = ("pad",)
MAX_TOKENS = Limit(256, "tokens", "attribution runs the model forward and backward, keeping every layer's "
                                  "activations")
MAX_TOKEN_STEPS = Limit(4_096, "token-steps", "integrated gradients runs the model forward and backward on "
                                              "the text once per step")
ACTIVATION_BYTES = 1 << 30  # what one batch of interpolated inputs may keep for the backward pass, estimated
ACTIVATION_FACTOR = 40  # float32 numbers kept per layer, token and hidden unit for the backward (measured 12-33)

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class AttributionSettings:
    """Integrated gradients' one numeric setting, with the bounds the page's slider is built from."""

    steps: int = option(32, 4, 128, "Integrated gradients: points on the path from the baseline to the input "
                                    "(more: the scores add up closer to f(input) - f(baseline); slower)", step=4)


@dataclass(frozen=True)
class PathSamples:
    """Integrated gradients' points on the path from the baseline (a = 0) to the input (a = 1)."""

    alphas: torch.Tensor  # (S,) float32, sorted, 0 and 1 included
    f: torch.Tensor  # (S,) float32: f(e' + a (e - e'))
    slope: torch.Tensor  # (S,) float32: df/da there (the scores' integrand summed over tokens)


@dataclass(frozen=True)
class Attribution:
    """One score per input token for one target (and contrast) next token."""

    model_id: str
    method: str  # one of METHODS
    input_ids: tuple[int, ...]  # (T,)
    labels: tuple[str, ...]  # readable text of each input token
    target_id: int
    target_text: str
    scores: torch.Tensor  # (T,) float32: in nats of f for the gradient methods; a share (sums to 1) for rollout
    contrast_id: int | None = None
    contrast_text: str | None = None
    f_input: float | None = None  # f at the input: log p(target) [- log p(contrast)]
    f_baseline: float | None = None  # integrated gradients: f at the baseline
    steps: int | None = None
    baseline: str | None = None
    rollout: torch.Tensor | None = None  # (T, T) attention rollout, rows sum to 1 (attention_rollout only)
    path: "PathSamples | None" = None  # integrated gradients: f and its slope where the gradient was taken
    passes: int = 0  # model calls (a forward + backward counts once)
    seconds: float = 0.0

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def total(self) -> float:
        return float(self.scores.double().sum())

    @property
    def completeness_gap(self) -> float | None:
        """sum of the scores - (f(input) - f(baseline)); integrated gradients only."""
        if self.f_input is None or self.f_baseline is None:
            return None
        return self.total - (self.f_input - self.f_baseline)

    @property
    def objective(self) -> str:
        """What the scores are in, for a caption: 'log p(␣Paris)' or 'log p(␣Paris) − log p(␣London)'."""
        if self.method == "attention_rollout":
            return "share of the last position's input (rollout)"
        f = f"log p({self.target_text!r})"
        return f + (f" − log p({self.contrast_text!r})" if self.contrast_id is not None else "")


# --- checks -------------------------------------------------------------------------------------


def _check_model(lm) -> None:
    if not isinstance(lm, LoadedModel):
        from playground.engines import why_not

        raise CapabilityError(why_not(lm.spec, "hidden_states") or f"{lm.spec.name} gives no gradients here.")
    if not lm.spec.can_generate:
        raise CapabilityError(f"{lm.spec.name} is an encoder: it has no next token to attribute. Pick a causal LM.")
    if getattr(lm.spec, "precision", None) == "int8":
        raise CapabilityError(f"{lm.spec.label} runs dynamically quantized int8 Linear layers, which have no "
                              f"gradient. Pick {lm.spec.base_id} (float32) or its bf16 variant.")


def vocab_size(lm: LoadedModel) -> int:
    head = lm.model.get_output_embeddings()
    return int(head.weight.shape[0])


def check_ids(lm: LoadedModel, ids: Sequence[int]) -> None:
    check_length(lm, len(ids))  # empty, or past the model's context
    MAX_TOKENS.check(len(ids), f"The text for {lm.spec.name}", "Shorten it.")


def _check_token(lm: LoadedModel, token_id: int | None, what: str) -> None:
    if token_id is None:
        return
    v = vocab_size(lm)
    if not isinstance(token_id, (int, np.integer)) or isinstance(token_id, bool) or not 0 <= int(token_id) < v:
        raise InputError(f"The {what} token id is {token_id!r}; {lm.spec.name}'s vocabulary has ids 0 to {v - 1:,}.")


def _prepare(lm, input_ids, target: int, contrast: int | None) -> torch.Tensor:
    _check_model(lm)
    ids = torch.as_tensor(list(input_ids) if not torch.is_tensor(input_ids) else input_ids, dtype=torch.long).reshape(-1)
    check_ids(lm, ids.tolist())
    _check_token(lm, target, "target")
    _check_token(lm, contrast, "contrast")
    if contrast is not None and int(contrast) == int(target):
        raise InputError("The contrast token is the target itself: pick another token to compare with.")
    return ids


def check_steps(lm: LoadedModel, n_tokens: int, steps: int) -> None:
    validate(AttributionSettings(steps=steps))
    MAX_TOKEN_STEPS.check(n_tokens * steps, f"Integrated gradients over {n_tokens:,} tokens at {steps} steps",
                          f"Use at most {max(1, MAX_TOKEN_STEPS.value // max(n_tokens, 1))} steps for this text, "
                          f"or shorten it.")


# --- the objective ------------------------------------------------------------------------------


def _objective(logits: torch.Tensor, target: int, contrast: int | None) -> torch.Tensor:
    """(B, V) last-position logits -> (B,) f: log p(target) [- log p(contrast)], in float32."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
    f = logp[:, int(target)]
    if contrast is not None:
        f = f - logp[:, int(contrast)]
    return f


def _run(lm: LoadedModel, embeds: torch.Tensor) -> torch.Tensor:
    """(B, T, H) input embeddings -> (B, V) logits at the last position (SDPA attention)."""
    b, t, _ = embeds.shape
    mask = torch.ones((b, t), dtype=torch.long)
    out = lm.model(inputs_embeds=embeds, attention_mask=mask, **_keeps_last_logits(lm))
    return out.logits[:, -1]  # (B, V)


def embeddings(lm: LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    """(T,) ids -> (T, H): what the decoder reads for them (Gemma's scaling included), no gradient."""
    with torch.no_grad():
        return lm.model.get_input_embeddings()(ids.reshape(1, -1))[0].detach()  # (T, H)


def _grad(lm: LoadedModel, embeds: torch.Tensor, target: int, contrast: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, H) -> (f (B,), df/de (B, T, H)); the gradient of each row's f with respect to its own input."""
    x = embeds.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        f = _objective(_run(lm, x), target, contrast)  # (B,)
        (g,) = torch.autograd.grad(f.sum(), x)  # rows are independent, so the sum's gradient is each row's own
    return f.detach(), g.detach()


# --- the methods ----------------------------------------------------------------------------------


def _result(lm, method, ids, target, contrast, scores, start, passes, **extra) -> Attribution:
    id_list = ids.tolist()
    pieces = lm.tokenizer.convert_ids_to_tokens(id_list)
    return Attribution(
        model_id=lm.spec.id, method=method, input_ids=tuple(id_list), labels=_labels(lm.tokenizer, id_list, pieces),
        target_id=int(target), target_text=lm.tokenizer.decode([int(target)]), scores=scores.float().contiguous(),
        contrast_id=None if contrast is None else int(contrast),
        contrast_text=None if contrast is None else lm.tokenizer.decode([int(contrast)]),
        passes=passes, seconds=time.perf_counter() - start, **extra,
    )


def gradient_x_input(lm: LoadedModel, input_ids: Sequence[int] | torch.Tensor, target: int,
                     contrast: int | None = None) -> Attribution:
    """score_t = sum_h df/de[t, h] * e[t, h], from one forward and one backward pass."""
    start = time.perf_counter()
    ids = _prepare(lm, input_ids, target, contrast)
    e = embeddings(lm, ids)  # (T, H)
    f, g = _grad(lm, e.unsqueeze(0), target, contrast)  # (1,), (1, T, H)
    scores = (g[0].float() * e.float()).sum(dim=-1)  # (T,)
    return _result(lm, "gradient_x_input", ids, target, contrast, scores, start, 1, f_input=float(f[0]))


def baseline_embeddings(lm: LoadedModel, ids: torch.Tensor, baseline: str = "pad") -> torch.Tensor:
    """(T,) ids -> (T, H) the baseline e' (see the module docstring)."""
    if baseline not in BASELINES:
        raise InputError(f"The baseline is {baseline!r}; it is one of {', '.join(BASELINES)}.")
    tok = lm.tokenizer
    pad = next((i for i in (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id) if i is not None), None)
    if pad is None:
        raise CapabilityError(f"{lm.spec.name}'s tokenizer has no pad, unknown or end token for the baseline of "
                              "integrated gradients: use gradient x input.")
    special = set(getattr(tok, "all_special_ids", ()) or ())
    keep = torch.tensor([k == 0 or int(i) in special for k, i in enumerate(ids.tolist())])  # (T,) these stay
    replaced = embeddings(lm, torch.where(keep, ids, torch.full_like(ids, int(pad))))  # (T, H)
    return replaced


def pad_token_text(lm: LoadedModel) -> str:
    tok = lm.tokenizer
    pad = next((i for i in (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id) if i is not None), None)
    return "" if pad is None else tok.convert_ids_to_tokens(int(pad))


def batch_size(lm: LoadedModel, n_tokens: int, budget: int = ACTIVATION_BYTES) -> int:
    """Interpolated inputs per forward + backward pass, so one batch keeps about `budget` bytes."""
    cfg = getattr(lm.model.config, "text_config", None) or lm.model.config
    per_input = lm.num_layers * n_tokens * int(cfg.hidden_size) * 4 * ACTIVATION_FACTOR
    per_input += lm.num_layers * lm.num_heads * n_tokens * n_tokens * 4 * 2  # attention probabilities, if kept
    return max(1, budget // max(per_input, 1))


def _first_grid(steps: int) -> list[float]:
    n = max(3, steps // 4)
    return [i / (n - 1) for i in range(n)]


def integrated_gradients(lm: LoadedModel, input_ids: Sequence[int] | torch.Tensor, target: int,
                         contrast: int | None = None, steps: int = AttributionSettings.steps,
                         baseline: str = "pad", progress: Progress | None = None,
                         budget: int = ACTIVATION_BYTES, alphas: Sequence[float] | None = None) -> Attribution:
    """IG_t = integral over a in [0, 1] of df/de(e' + a (e - e'))[t] . (e - e')[t], by the adaptive trapezoid rule.

    The gradient is taken at `steps` points a_k of the path (0 and 1 included). A quarter of them
    are evenly spaced; the rest go, a batch at a time, to the midpoints of the intervals where
    the trapezoid rule's integral of the slope df/da disagrees most with the change of f between
    the interval's ends (both known from the passes already made). The completeness gap,
    sum(scores) - (f(e) - f(e')), is the sum of those disagreements: measured, not assumed.
    `alphas`: use exactly these points instead (then the scores are linear in f, e.g. a
    contrast's scores are the difference of the two tokens' scores on the same points).
    """
    start = time.perf_counter()
    ids = _prepare(lm, input_ids, target, contrast)
    t = int(ids.numel())
    fixed = None if alphas is None else sorted({float(a) for a in alphas})
    if fixed is not None and (len(fixed) < 2 or fixed[0] != 0.0 or fixed[-1] != 1.0):
        raise InputError("The path's points must include 0 and 1.")
    steps = len(fixed) if fixed is not None else int(steps)
    check_steps(lm, t, steps)
    report = progress or (lambda f, m: None)
    e = embeddings(lm, ids)  # (T, H)
    e0 = baseline_embeddings(lm, ids, baseline)  # (T, H)
    diff = e - e0  # (T, H)
    b = min(steps, batch_size(lm, t, budget))
    points: dict[float, tuple[float, torch.Tensor]] = {}  # a -> (f(a), per-token slope (T,) float64)
    passes = 0

    def evaluate(new: list[float]) -> None:
        nonlocal passes
        for i in range(0, len(new), b):
            chunk = new[i : i + b]
            al = torch.tensor(chunk, dtype=e.dtype)  # (c,)
            x = e0.unsqueeze(0) + al.view(-1, 1, 1) * diff.unsqueeze(0)  # (c, T, H)
            f, g = _grad(lm, x, target, contrast)  # (c,), (c, T, H)
            slope = (g.double() * diff.double().unsqueeze(0)).sum(dim=-1)  # (c, T): df/da split by token
            for j, a in enumerate(chunk):
                points[a] = (float(f[j]), slope[j].clone())
            passes += 1
            report(0.02 + 0.96 * len(points) / steps, f"integrated gradients: {len(points)} of {steps} points on the path")

    evaluate(fixed if fixed is not None else _first_grid(steps))
    round_size = min(b, max(4, steps // 8))
    while len(points) < steps:
        grid = sorted(points)
        errs = []
        for a0, a1 in zip(grid, grid[1:]):
            h = a1 - a0
            trap = h * float(points[a0][1].sum() + points[a1][1].sum()) / 2
            errs.append((abs((points[a1][0] - points[a0][0]) - trap), (a0 + a1) / 2))
        errs.sort(reverse=True)
        new = [m for _, m in errs[: min(round_size, steps - len(points))] if m not in points]
        if not new:
            break
        evaluate(new)
    grid = sorted(points)
    al = torch.tensor(grid, dtype=torch.float64)  # (S,)
    slopes = torch.stack([points[a][1] for a in grid])  # (S, T)
    scores = torch.trapezoid(slopes, al, dim=0)  # (T,)
    report(1.0, "done")
    return _result(lm, "integrated_gradients", ids, target, contrast, scores, start, passes,
                   f_input=points[1.0][0], f_baseline=points[0.0][0], steps=len(grid), baseline=baseline,
                   path=PathSamples(al.float(), torch.tensor([points[a][0] for a in grid]),
                                    slopes.sum(dim=-1).float()))


def rollout(weights: torch.Tensor, residual: float = 0.5) -> torch.Tensor:
    """(layers, heads, T, T) attention -> (T, T) rollout: prod over layers of (residual I + (1 - residual) mean_h A).

    The first layer is on the right: R = A_L ... A_1, so row i of R is position i's top-layer
    input traced back to the input tokens. Every factor's rows sum to 1, so R's do too.
    """
    w = weights.double()  # (L, heads, T, T)
    t = w.shape[-1]
    eye = torch.eye(t, dtype=torch.float64)
    r = eye.clone()
    for layer in range(w.shape[0]):
        a = residual * eye + (1 - residual) * w[layer].mean(dim=0)  # (T, T)
        a = a / a.sum(dim=-1, keepdim=True)
        r = a @ r
    return r.float()


def attention_rollout(lm: LoadedModel, input_ids: Sequence[int] | torch.Tensor, target: int,
                      contrast: int | None = None) -> Attribution:
    """The last position's row of the rollout of the model's eager attention maps (one forward pass)."""
    start = time.perf_counter()
    ids = _prepare(lm, input_ids, target, None)
    maps = attention_maps(lm, ids)  # exact eager weights, (layers, heads, T, T)
    r = rollout(maps.weights)  # (T, T)
    return _result(lm, "attention_rollout", ids, target, None, r[-1].clone(), start, 1, rollout=r)


def attribute(lm: LoadedModel, input_ids: Sequence[int] | torch.Tensor, method: str, target: int,
              contrast: int | None = None, settings: AttributionSettings | None = None, baseline: str = "pad",
              progress: Progress | None = None) -> Attribution:
    """One of METHODS by name (the page's entry point)."""
    settings = validate(settings or AttributionSettings())
    if method == "gradient_x_input":
        return gradient_x_input(lm, input_ids, target, contrast)
    if method == "integrated_gradients":
        return integrated_gradients(lm, input_ids, target, contrast, settings.steps, baseline, progress)
    if method == "attention_rollout":
        return attention_rollout(lm, input_ids, target)
    raise InputError(f"The method is {method!r}; it is one of {', '.join(METHODS)}.")
