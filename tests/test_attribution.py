"""Attribution on the real bundled models (playground.attribution): integrated gradients'
completeness, gradient x input against autograd through the model's own input_ids path and
against finite differences, contrastive linearity, attention rollout against a hand computation
from the model's eager maps, and the bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from playground import attribution as attr
from playground.attend import weights_needed
from playground.errors import InputError
from playground.limits import LimitError
from playground.passes import next_token_distribution

PAGE_PROMPT = "Once upon a time, in a small village by the sea, there lived a"  # the Next token page's default
SHORT = "The Eiffel Tower is in the city of"


def ids_of(lm, text: str) -> list[int]:
    return list(lm.tokenizer(text)["input_ids"])


def top2(lm, ids) -> tuple[int, int, torch.Tensor]:
    logp = torch.log_softmax(next_token_distribution(lm, ids).logits, dim=-1)  # (V,)
    a, b = torch.topk(logp, 2).indices.tolist()
    return a, b, logp


def log_prob_of(lm, ids: list[int], token: int) -> float:
    """log p(token | ids) through input_ids, the model's ordinary path."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = lm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, -1].float()
    return float(torch.log_softmax(logits, dim=-1)[token])


# --- integrated gradients: completeness ------------------------------------------------------------

# Tolerance: the sum of the scores is within 2% of f(input) - f(baseline) at the default 32 steps
# (measured on this machine: 0.35% for SmolLM2 on the page's prompt, 0.16% for Gemma on SHORT).
COMPLETENESS_TOLERANCE = 0.02


@pytest.mark.parametrize("fixture, text", [("smollm2", PAGE_PROMPT), ("gemma", SHORT)])
def test_integrated_gradients_completeness(request, fixture, text):
    lm = request.getfixturevalue(fixture)
    ids = ids_of(lm, text)
    target, _, logp = top2(lm, ids)
    steps = attr.AttributionSettings().steps
    assert steps == 32
    r = attr.integrated_gradients(lm, ids, target, steps=steps)
    assert r.scores.shape == (len(ids),) and r.steps == steps and r.baseline == "pad"
    # f(input) is the model's own log-probability of the target (its input_ids path)
    assert r.f_input == pytest.approx(float(logp[target]), abs=1e-4)
    # f(baseline) is the model on the baseline's tokens: the text's tokens replaced by the pad token,
    # the first and the special tokens kept, so their scores are 0
    pad = lm.tokenizer.pad_token_id
    special = set(lm.tokenizer.all_special_ids)
    base_ids = [i if k == 0 or i in special else pad for k, i in enumerate(ids)]
    assert r.f_baseline == pytest.approx(log_prob_of(lm, base_ids, target), abs=1e-3)
    kept = [k for k, i in enumerate(ids) if base_ids[k] == i]
    assert kept and all(float(r.scores[k]) == 0.0 for k in kept)
    delta = r.f_input - r.f_baseline
    assert abs(delta) > 1.0  # the baseline is far from the input: the check is not trivially met
    assert abs(r.completeness_gap) <= COMPLETENESS_TOLERANCE * abs(delta), (r.total, delta)
    # the path's points: 0 and 1 included, f at the ends is f(baseline) and f(input)
    assert r.path.alphas[0] == 0.0 and r.path.alphas[-1] == 1.0 and len(r.path.alphas) == steps
    assert float(r.path.f[0]) == pytest.approx(r.f_baseline) and float(r.path.f[-1]) == pytest.approx(r.f_input)
    # the shared model was not changed: no parameter got a .grad
    assert all(p.grad is None for p in lm.model.parameters())


# --- gradient x input ---------------------------------------------------------------------------


def test_gradient_x_input_equals_autograd_on_the_models_own_path_and_finite_differences(smollm2):
    lm = smollm2
    ids = ids_of(lm, SHORT)
    target, _, logp = top2(lm, ids)
    r = attr.gradient_x_input(lm, ids, target)
    assert r.f_input == pytest.approx(float(logp[target]), abs=1e-4)

    # independent: the model run on input_ids; the embedding module's output captured by a hook
    captured = []
    handle = lm.model.get_input_embeddings().register_forward_hook(lambda m, a, out: captured.append(out))
    try:
        x = torch.tensor([ids])
        with torch.enable_grad():
            logits = lm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, -1]
            f = torch.log_softmax(logits.float(), dim=-1)[target]
            (g,) = torch.autograd.grad(f, captured[0])  # (1, T, H)
    finally:
        handle.remove()
    want = (g[0] * captured[0][0].detach()).sum(dim=-1)  # (T,)
    torch.testing.assert_close(r.scores, want, atol=1e-4, rtol=1e-3)
    assert all(p.grad is None for p in lm.model.parameters())

    # finite differences: scaling one position's embedding by (1 +- eps) moves f by about 2 eps score_t
    e = attr.embeddings(lm, torch.tensor(ids))  # (T, H)
    eps = 1e-2
    rows = []
    for t in range(len(ids)):
        for sign in (1, -1):
            x = e.clone()
            x[t] = x[t] * (1 + sign * eps)
            rows.append(x)
    with torch.no_grad():
        fs = attr._objective(attr._run(lm, torch.stack(rows)), target, None).double()  # (2T,)
    fd = (fs[0::2] - fs[1::2]) / (2 * eps)  # (T,)
    np.testing.assert_allclose(fd.numpy(), r.scores.double().numpy(), atol=0.02, rtol=0.05)


# --- contrastive --------------------------------------------------------------------------------


def test_contrastive_is_the_difference_of_the_two_tokens_attributions(smollm2):
    lm = smollm2
    ids = ids_of(lm, SHORT)
    a, b, logp = top2(lm, ids)
    ga, gb, gab = (attr.gradient_x_input(lm, ids, a), attr.gradient_x_input(lm, ids, b),
                   attr.gradient_x_input(lm, ids, a, contrast=b))
    torch.testing.assert_close(gab.scores, ga.scores - gb.scores, atol=2e-4, rtol=1e-4)
    assert gab.f_input == pytest.approx(float(logp[a] - logp[b]), abs=1e-4)
    assert gab.contrast_id == b and "−" in gab.objective
    # integrated gradients is linear in f on the same points of the path (the adaptive points depend on f)
    iab = attr.integrated_gradients(lm, ids, a, contrast=b, steps=8)
    grid = iab.path.alphas.double().tolist()
    ia = attr.integrated_gradients(lm, ids, a, alphas=grid)
    ib = attr.integrated_gradients(lm, ids, b, alphas=grid)
    torch.testing.assert_close(iab.scores, ia.scores - ib.scores, atol=1e-3, rtol=1e-3)
    assert iab.f_input == pytest.approx(ia.f_input - ib.f_input, abs=1e-4)
    assert iab.f_baseline == pytest.approx(ia.f_baseline - ib.f_baseline, abs=1e-4)
    with pytest.raises(InputError, match="contrast token is the target"):
        attr.gradient_x_input(lm, ids, a, contrast=a)


# --- attention rollout --------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["smollm2", "gemma"])
def test_rollout_rows_sum_to_one_and_match_a_hand_computation(request, fixture):
    lm = request.getfixturevalue(fixture)
    ids = ids_of(lm, SHORT)
    target, _, _ = top2(lm, ids)
    r = attr.attention_rollout(lm, ids, target)
    t = len(ids)
    assert r.rollout.shape == (t, t)
    torch.testing.assert_close(r.rollout.sum(dim=-1), torch.ones(t), atol=1e-5, rtol=0)
    assert float(torch.triu(r.rollout, diagonal=1).abs().max()) == 0.0  # causal: nothing from later tokens
    # by hand, from the model's own output_attentions=True eager maps
    x = torch.tensor([ids])
    with torch.no_grad(), weights_needed():
        maps = lm.model(input_ids=x, attention_mask=torch.ones_like(x), output_attentions=True).attentions
    want = np.eye(t)
    for layer in maps:  # (1, heads, T, T), first layer first
        a = layer[0].double().mean(dim=0).numpy()
        want = (0.5 * a + 0.5 * np.eye(t)) @ want
    np.testing.assert_allclose(r.rollout.numpy(), want, atol=1e-5)
    np.testing.assert_allclose(r.scores.numpy(), want[-1], atol=1e-5)
    assert r.completeness_gap is None


# --- bounds ---------------------------------------------------------------------------------------


def test_bounds_and_bad_input_are_refused_with_the_numbers(smollm2):
    lm = smollm2
    ids = ids_of(lm, SHORT)
    target, _, _ = top2(lm, ids)
    long_ids = ids_of(lm, "word " * 300)
    assert len(long_ids) > attr.MAX_TOKENS.value
    with pytest.raises(LimitError, match=rf"{len(long_ids)} tokens; at most 256 tokens"):
        attr.gradient_x_input(lm, long_ids, target)
    mid = long_ids[:200]
    with pytest.raises(LimitError, match=r"200 tokens at 32 steps is 6,400 token-steps; at most 4,096.*at most 20 steps"):
        attr.integrated_gradients(lm, mid, target, steps=32)
    with pytest.raises(InputError, match="steps is 2; it must be between 4 and 128"):
        attr.integrated_gradients(lm, ids, target, steps=2)
    with pytest.raises(InputError, match="target token id is 10000000"):
        attr.gradient_x_input(lm, ids, 10_000_000)
    with pytest.raises(InputError, match="empty"):
        attr.gradient_x_input(lm, [], target)
    with pytest.raises(InputError, match="method is 'lrp'"):
        attr.attribute(lm, ids, "lrp", target)
    with pytest.raises(InputError, match="baseline is 'zero'"):
        attr.integrated_gradients(lm, ids, target, steps=4, baseline="zero")
