"""Sampling math on hand-computed examples: temperature, top-k, top-p, min-p, entropy, the draw.

No model here: the logits are written out, and every expected number is worked by hand in
the comment beside it. (tests/test_next_token.py checks the same math against the real
models and against transformers' own logits processors.)
"""

from __future__ import annotations

import math

import pytest
import torch

from playground import stepping as stp
from playground.errors import InputError
from playground.options import bounds
from playground.sampling import (
    SamplingSettings,
    apply_temperature,
    check,
    draw,
    entropy,
    filtered_logits,
    min_p_filter,
    probs,
    shape,
    top_k_filter,
    top_p_filter,
)

# probabilities 0.5, 0.3, 0.15, 0.05 (they sum to 1, so softmax(log p) = p)
P4 = torch.tensor([0.5, 0.3, 0.15, 0.05])
L4 = P4.log()


def kept(logits: torch.Tensor) -> list[int]:
    return [i for i, x in enumerate(logits.tolist()) if math.isfinite(x)]


def test_temperature_is_softmax_of_logits_over_t():
    logits = torch.tensor([2.0, 1.0, 0.0])
    # T = 2: softmax([1, 0.5, 0]) = [e, e^0.5, 1] / (e + e^0.5 + 1) = [2.71828, 1.64872, 1] / 5.36700
    expected = torch.tensor([0.506480, 0.307195, 0.186324])
    assert torch.allclose(probs(logits, SamplingSettings(temperature=2.0)), expected, atol=1e-5)
    # T = 0.5: softmax([4, 2, 0]) = [54.598, 7.389, 1] / 62.987
    assert torch.allclose(probs(logits, SamplingSettings(temperature=0.5)),
                          torch.tensor([0.866813, 0.117310, 0.015876]), atol=1e-5)
    # T = 1 is the model's own distribution
    assert torch.allclose(probs(logits, SamplingSettings()), torch.softmax(logits, -1))
    for t in (0.3, 0.7, 1.3, 2.0):  # 2.0: the most the shared temperature option allows
        assert torch.allclose(probs(logits, SamplingSettings(temperature=t)), torch.softmax(logits / t, -1), atol=1e-6)


def test_temperature_towards_zero_gives_the_argmax():
    logits = torch.tensor([0.1, 2.5, 2.4, -1.0])
    for t in (0.05, 0.01):
        p = probs(logits, SamplingSettings(temperature=t))
        assert int(p.argmax()) == 1
    assert float(probs(logits, SamplingSettings(temperature=0.01))[1]) > 0.9999  # e^(-0.1/0.01) = 4.5e-5 left
    greedy = probs(logits, SamplingSettings(temperature=0.0))
    assert greedy.tolist() == [0.0, 1.0, 0.0, 0.0]
    # a tie at the top: greedy takes the lowest id, as torch.argmax (and transformers' greedy search)
    assert probs(torch.tensor([1.0, 3.0, 3.0]), SamplingSettings(temperature=0.0)).tolist() == [0.0, 1.0, 0.0]
    assert draw(logits, SamplingSettings(temperature=0.0)) == 1


def test_top_k_keeps_the_k_largest_and_ties_at_the_kth():
    assert kept(top_k_filter(torch.tensor([3.0, 1.0, 2.0, 0.0]), 2)) == [0, 2]
    assert kept(top_k_filter(torch.tensor([2.0, 1.0, 1.0, 0.0]), 2)) == [0, 1, 2]  # tie at the 2nd value
    assert kept(top_k_filter(L4, 0)) == [0, 1, 2, 3]  # 0 keeps all
    # top-2 of (0.5, 0.3, 0.15, 0.05), renormalised: 0.5 / 0.8 and 0.3 / 0.8
    assert torch.allclose(probs(L4, SamplingSettings(top_k=2)), torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=1e-6)


@pytest.mark.parametrize("p, expected", [
    (0.3, [0]),  # 0.5 already reaches 0.3
    (0.5, [0]),  # 0.5 reaches 0.5 exactly: one token is enough
    (0.51, [0, 1]),
    (0.8, [0, 1]),  # 0.5 + 0.3 = 0.8 reaches 0.8 exactly
    (0.81, [0, 1, 2]),
    (0.95, [0, 1, 2]),  # 0.5 + 0.3 + 0.15 = 0.95
    (0.96, [0, 1, 2, 3]),
    (1.0, [0, 1, 2, 3]),
])
def test_top_p_keeps_exactly_the_smallest_set_that_reaches_p(p, expected):
    assert kept(top_p_filter(L4, p)) == expected


def test_top_p_keeps_ties_with_the_last_token_kept():
    # 0.4, 0.2, 0.2, 0.2: the smallest set reaching 0.5 is {0, one of the 0.2s}; its ties come too
    tied = torch.tensor([0.4, 0.2, 0.2, 0.2]).log()
    assert kept(top_p_filter(tied, 0.5)) == [0, 1, 2, 3]
    assert kept(top_p_filter(tied, 0.4)) == [0]  # 0.4 alone reaches 0.4: no tie to add
    # 0.3, 0.3, 0.2, 0.2 at p = 0.3: the first 0.3 reaches it, and the other 0.3 is tied with it
    assert kept(top_p_filter(torch.tensor([0.3, 0.2, 0.3, 0.2]).log(), 0.3)) == [0, 2]
    # renormalised: 0.5 / 0.8 and 0.3 / 0.8
    assert torch.allclose(probs(L4, SamplingSettings(top_p=0.8)), torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=1e-6)


def test_top_p_measures_mass_after_temperature_and_top_k():
    # T = 0.5 squares and renormalises: 0.25, 0.09, 0.0225, 0.0025 over 0.365 = 0.6849, 0.2466, 0.0616, 0.0068
    s = SamplingSettings(temperature=0.5, top_p=0.9)
    assert kept(filtered_logits(L4, s)) == [0, 1]  # 0.6849 + 0.2466 = 0.9315 reaches 0.9
    # top-k 3 first: 0.5, 0.3, 0.15 over 0.95 = 0.5263, 0.3158, 0.1579; p = 0.85 needs all three
    assert kept(filtered_logits(L4, SamplingSettings(top_k=3, top_p=0.85))) == [0, 1, 2]
    assert kept(filtered_logits(L4, SamplingSettings(top_p=0.85))) == [0, 1, 2]  # 0.8 < 0.85 without top-k too
    assert kept(filtered_logits(L4, SamplingSettings(top_k=3, top_p=0.84))) == [0, 1]  # 0.8421 reaches 0.84


def test_min_p_is_relative_to_the_top_token():
    # top token 0.5: min_p 0.2 drops below 0.1 (the 0.05); min_p 0.5 drops below 0.25
    assert kept(min_p_filter(L4, 0.2)) == [0, 1, 2]
    assert kept(min_p_filter(L4, 0.5)) == [0, 1]
    assert kept(min_p_filter(L4, 1.0)) == [0]
    assert kept(min_p_filter(L4, 0.0)) == [0, 1, 2, 3]
    # min_p 0.5 renormalised: 0.5 / 0.8, 0.3 / 0.8
    assert torch.allclose(probs(L4, SamplingSettings(min_p=0.5)), torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=1e-6)
    # after temperature 2 the top token holds less, so min_p 0.5 keeps more:
    # sqrt(p) = 0.7071, 0.5477, 0.3873, 0.2236; 0.5 x 0.7071 = 0.3536 keeps three
    assert kept(filtered_logits(L4, SamplingSettings(temperature=2.0, min_p=0.5))) == [0, 1, 2]


def test_probabilities_sum_to_one_after_every_filter():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5000, generator=g) * 3  # (B, V)
    steps = [
        lambda x: apply_temperature(x, 0.7),
        lambda x: apply_temperature(x, 0.0),
        lambda x: top_k_filter(x, 40),
        lambda x: top_p_filter(x, 0.9),
        lambda x: min_p_filter(x, 0.05),
    ]
    for f in steps:
        p = torch.softmax(f(logits), dim=-1)
        assert torch.allclose(p.sum(-1), torch.ones(8), atol=1e-5)
    for s in (SamplingSettings(), SamplingSettings(temperature=1.7, top_k=100, top_p=0.5, min_p=0.1),
              SamplingSettings(temperature=0.0, top_p=0.3), SamplingSettings(temperature=0.2, min_p=1.0)):
        p = probs(logits, s)
        assert torch.allclose(p.sum(-1), torch.ones(8), atol=1e-5), s
        assert (p >= 0).all()
        for row in range(8):  # the batch is the same as one row at a time
            assert torch.allclose(p[row], probs(logits[row], s), atol=1e-6)


def test_bad_values_give_clear_errors():
    with pytest.raises(InputError, match=r"temperature is -0.5; it must be between 0.0 and 2.0"):
        probs(L4, SamplingSettings(temperature=-0.5))
    with pytest.raises(InputError, match=r"temperature is -1"):
        apply_temperature(L4, -1)
    with pytest.raises(InputError, match=r"top_p is 1.5; it must be between 0.01 and 1.0"):
        probs(L4, SamplingSettings(top_p=1.5))
    with pytest.raises(InputError, match=r"top_p is 1.5; it must be above 0 and at most 1"):
        top_p_filter(L4, 1.5)
    with pytest.raises(InputError, match=r"top_p is 0"):
        top_p_filter(L4, 0.0)
    with pytest.raises(InputError, match=r"top_k is 10; this vocabulary has only 4 tokens"):
        probs(L4, SamplingSettings(top_k=10))
    with pytest.raises(InputError, match=r"top_k is 10; this vocabulary has only 4 tokens"):
        top_k_filter(L4, 10)
    with pytest.raises(InputError, match=r"top_k is 60,000; this vocabulary has only 49,152 tokens"):
        check(SamplingSettings(top_k=60_000), 49_152)
    with pytest.raises(InputError, match=r"top_k is -1"):
        top_k_filter(L4, -1)
    with pytest.raises(InputError, match=r"min_p is 2"):
        min_p_filter(L4, 2)
    with pytest.raises(InputError, match=r"top_k is 2.5; it must be a whole number"):
        check(SamplingSettings(top_k=2.5))
    with pytest.raises(InputError, match=r"temperature is nan"):
        check(SamplingSettings(temperature=float("nan")))
    with pytest.raises(InputError, match=r"'hot' is not a number"):
        stp.parse_temperatures("0.5, hot")
    with pytest.raises(InputError, match=r"temperature 9 is outside 0 to 2"):
        stp.parse_temperatures("0.5, 9")
    with pytest.raises(InputError, match=r"No temperature"):
        stp.parse_temperatures(" , ")


def test_entropy_in_bits():
    assert entropy(torch.full((4,), 0.25)) == pytest.approx(2.0)
    assert entropy(torch.tensor([1.0, 0.0, 0.0])) == 0.0
    # 0.5, 0.3, 0.15, 0.05: -(0.5 log2 0.5 + 0.3 log2 0.3 + 0.15 log2 0.15 + 0.05 log2 0.05) = 1.6477
    assert entropy(P4) == pytest.approx(1.64773, abs=1e-4)


def test_shape_reports_every_stage():
    sh = shape(L4, SamplingSettings(top_k=2))
    assert sh.n_kept == 2 and sh.kept.tolist() == [True, True, False, False]
    assert sh.kept_mass == pytest.approx(0.8, abs=1e-6)  # 0.5 + 0.3 before renormalising
    assert sh.top_probability == pytest.approx(0.625, abs=1e-6)
    # 0.625, 0.375: -(0.625 log2 0.625 + 0.375 log2 0.375) = 0.9544
    assert sh.entropy_bits == pytest.approx(0.95443, abs=1e-4)
    assert sh.model_entropy_bits == pytest.approx(1.64773, abs=1e-4)
    greedy = shape(L4, SamplingSettings(temperature=0.0))
    assert greedy.n_kept == 1 and greedy.kept_mass == 1.0 and greedy.entropy_bits == 0.0


def test_seeded_draw_is_reproducible_and_never_takes_a_dropped_token():
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(3))
    s = SamplingSettings(temperature=1.2, top_k=50, top_p=0.8, seed=11)
    allowed = set(kept(filtered_logits(logits, s)))
    assert draw(logits, s) == draw(logits, s)
    draws = {draw(logits, SamplingSettings(temperature=1.2, top_k=50, top_p=0.8, seed=i)) for i in range(200)}
    assert draws <= allowed and len(draws) > 5


def test_walk_text_form_and_distinct_n():
    assert stp.parse_walk("12g.7s.300p") == [(12, "greedy"), (7, "sampled"), (300, "picked")]
    assert stp.parse_walk("") == []
    with pytest.raises(InputError, match=r"'12x' in the walk is not a step"):
        stp.parse_walk("12x")
    # a b a b: unigrams {a, b} of 4 = 0.5; bigrams ab, ba, ab: {ab, ba} of 3
    assert stp.distinct_n([[1, 2, 1, 2]], 1) == 0.5
    assert stp.distinct_n([[1, 2, 1, 2]], 2) == pytest.approx(2 / 3)
    assert stp.distinct_n([[1, 2, 3], [1, 2, 3]], 2) == 0.5  # the same sample twice: half the bigrams repeat
    assert stp.distinct_n([[5]], 2) == 0.0
    assert stp.parse_temperatures("0.2, 0.7 1;1.5, 0.7") == (0.2, 0.7, 1.0, 1.5)


def test_sliders_are_built_from_declared_bounds():
    b = bounds(SamplingSettings, "top_p")
    assert (b.lo, b.hi, b.step) == (0.01, 1.0, 0.01)
    assert bounds(SamplingSettings, "temperature").lo == 0.0
