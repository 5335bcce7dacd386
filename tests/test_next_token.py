"""The next-token page on the real bundled models: the distribution it shows, the walk, the
sweep, transformers' own logits processors, the page driven by AppTest, and Chromium.
"""

from __future__ import annotations

import re

import pytest
import torch
from transformers import GenerationConfig

from playground import passes
from playground import stepping as stp
from playground.sampling import SamplingSettings, probs, shape
from tests.conftest import app_test, screenshot, texts, wait_idle

PROMPT = "Once upon a time, in a small village by the sea, there lived a"
PAGE = "views/next_token.py"
WALKED = re.compile(r"\d+ tokens? walked ·")


def direct_logits(lm, ids) -> torch.Tensor:
    """The last position's logits straight from the model, not through playground.passes."""
    t = torch.tensor([list(ids)])
    with torch.no_grad():
        return lm.model(input_ids=t, attention_mask=torch.ones_like(t)).logits[0, -1].float()  # (V,)


@pytest.mark.parametrize("fixture", ["smollm2", "gemma"])
def test_distribution_shown_is_softmax_of_the_last_logits(request, fixture):
    lm = request.getfixturevalue(fixture)
    prompt = stp.make_prompt(lm.tokenizer, PROMPT, use_chat_template=False)
    dist = stp.LogitsCache().get(lm, prompt.ids)
    ref = torch.softmax(direct_logits(lm, prompt.ids), dim=-1)  # (V,)
    assert dist.vocab_size == ref.shape[0]
    assert torch.allclose(dist.probs(), ref, atol=1e-6)
    from playground.passes import forward  # the page's pass computes the last row only, not (T, V)
    last = forward(lm, torch.tensor(prompt.ids), last_only=True).logits
    assert last.shape == (1, ref.shape[0]) and forward(lm, torch.tensor(prompt.ids)).logits.shape[0] == len(prompt.ids)
    v = stp.view(dist, SamplingSettings(), lm.tokenizer, 20)
    top = torch.topk(ref, 20)
    assert [r.id for r in v.rows] == top.indices.tolist()
    for r, p in zip(v.rows, top.values.tolist()):
        assert r.p_model == pytest.approx(p, abs=1e-6) and r.p_after == pytest.approx(p, abs=1e-6) and r.kept
    assert v.n_kept == ref.shape[0] and v.kept_mass == pytest.approx(1.0, abs=1e-5)
    assert v.top_probability == pytest.approx(float(ref.max()), abs=1e-6)
    # under filters the final distribution still sums to 1, and is the survivors renormalised
    sh = shape(dist.logits, SamplingSettings(temperature=0.8, top_k=40, top_p=0.9, min_p=0.02))
    assert float(sh.final.sum()) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(sh.final[sh.kept], sh.scaled[sh.kept] / sh.kept_mass, atol=1e-6)


def test_filters_match_transformers_logits_processors(smollm2):
    """The chain `generate(do_sample=True)` builds, applied to real logits, keeps the same tokens."""
    lm = smollm2
    prompt = stp.make_prompt(lm.tokenizer, PROMPT, use_chat_template=False)
    logits = stp.LogitsCache().get(lm, prompt.ids).logits
    ids = torch.tensor([list(prompt.ids)])
    for s in (SamplingSettings(temperature=0.7, top_k=50, top_p=0.9, min_p=0.05),
              SamplingSettings(temperature=1.3, top_p=0.6), SamplingSettings(temperature=0.5, top_k=8),
              SamplingSettings(temperature=1.0, min_p=0.2), SamplingSettings(temperature=2.0, top_k=200, top_p=0.95)):
        gc = GenerationConfig(do_sample=True, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p)
        procs = lm.model._get_logits_processor(generation_config=gc, input_ids_seq_length=ids.shape[1], device="cpu")
        names = [type(p).__name__ for p in procs]
        assert names == sorted(names, key=["TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper",
                                           "MinPLogitsWarper"].index), names  # the documented order
        theirs = torch.softmax(procs(ids, logits[None].clone())[0], dim=-1)
        ours = probs(logits, s)
        assert torch.equal(ours > 0, theirs > 0), s
        assert torch.allclose(ours, theirs, atol=1e-5), s


def test_greedy_walk_of_32_steps_equals_model_generate(smollm2):
    lm = smollm2
    prompt = stp.make_prompt(lm.tokenizer, PROMPT, use_chat_template=False)
    before = passes.FORWARD_PASSES
    cache = stp.LogitsCache(max_entries=64)
    walk = stp.greedy_walk(lm, prompt.ids, 32, cache=cache)
    assert passes.FORWARD_PASSES - before == 32  # one forward pass per new token
    ids = torch.tensor([list(prompt.ids)])
    ref = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=32, do_sample=False)
    assert list(walk.token_ids) == ref[0, ids.shape[1]:].tolist()
    assert len(walk.steps) == 32 and all(s.rank == 1 and s.how == "greedy" for s in walk.steps)
    # undo and reset give back earlier walks, and the text form round-trips through replay
    assert walk.undo().token_ids == walk.token_ids[:-1] and walk.reset().steps == ()
    before = passes.FORWARD_PASSES
    again = stp.replay(lm.spec.id, prompt.ids, stp.parse_walk(walk.to_param()), lambda i: cache.get(lm, i),
                       lm.tokenizer, SamplingSettings())
    assert again.token_ids == walk.token_ids
    assert passes.FORWARD_PASSES == before  # every prefix was cached: a replay runs nothing
    assert [s.p_model for s in again.steps] == pytest.approx([s.p_model for s in walk.steps], abs=1e-6)


def test_greedy_walk_equals_model_generate_on_gemma(gemma):
    prompt = stp.make_prompt(gemma.tokenizer, "The three primary colours are", use_chat_template=False)
    walk = stp.greedy_walk(gemma, prompt.ids, 16)
    ids = torch.tensor([list(prompt.ids)])
    ref = gemma.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
    assert list(walk.token_ids) == ref[0, ids.shape[1]:].tolist()


def test_seeded_steps_and_sweep_are_reproducible(smollm2):
    lm = smollm2
    prompt = stp.make_prompt(lm.tokenizer, PROMPT, use_chat_template=False)
    cache = stp.LogitsCache()
    walk = stp.Walk(lm.spec.id, prompt.ids)
    dist = cache.get(lm, walk.ids)
    s = SamplingSettings(temperature=1.5, seed=5)
    a = stp.take(walk, dist, lm.tokenizer, "sampled", s)
    b = stp.take(walk, dist, lm.tokenizer, "sampled", s)
    assert a.steps == b.steps and a.steps[0].how == "sampled"
    drawn = {stp.take(walk, dist, lm.tokenizer, "sampled", SamplingSettings(temperature=1.5, seed=i)).token_ids[0]
             for i in range(12)}
    assert len(drawn) > 1  # other seeds draw other tokens
    picked = stp.take(walk, dist, lm.tokenizer, "picked", s, token_id=int(torch.topk(dist.logits, 7).indices[6]))
    assert picked.steps[0].rank == 7 and picked.steps[0].how == "picked"
    first = stp.sweep(lm, prompt.ids, SamplingSettings(seed=3), [0.7, 1.5], stp.SweepSettings(n_samples=3, n_tokens=8))
    second = stp.sweep(lm, prompt.ids, SamplingSettings(seed=3), [0.7, 1.5], stp.SweepSettings(n_samples=3, n_tokens=8))
    assert [s.token_ids for p in first.points for s in p.samples] == [s.token_ids for p in second.points for s in p.samples]


def test_sweep_with_a_kv_cache_is_honest(smollm2):
    """Greedy rows equal model.generate; every log-probability equals a full forward pass's."""
    lm = smollm2
    prompt = stp.make_prompt(lm.tokenizer, PROMPT, use_chat_template=False)
    before = passes.FORWARD_PASSES
    sw = stp.sweep(lm, prompt.ids, SamplingSettings(seed=1), [0.0, 1.0, 2.0], stp.SweepSettings(n_samples=3, n_tokens=16))
    assert passes.FORWARD_PASSES - before == sw.forward_passes == 16  # prefill + 15 batched steps
    ids = torch.tensor([list(prompt.ids)])
    ref = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
    greedy = sw.points[0]
    assert all(list(s.token_ids) == ref[0, ids.shape[1]:].tolist() for s in greedy.samples)
    assert greedy.distinct_2 == pytest.approx(1 / 3, abs=0.05)  # three copies of one text: a third are new
    hot = sw.points[2].samples[0]
    full = torch.log_softmax(_full_logits(lm, prompt.ids, hot.token_ids), -1)  # (T, V), no cache
    n = len(prompt.ids)
    recomputed = [float(full[n - 1 + i, t]) for i, t in enumerate(hot.token_ids)]
    assert list(hot.logprobs) == pytest.approx(recomputed, abs=2e-3)
    assert sw.points[0].mean_logprob > sw.points[2].mean_logprob  # T = 2 text is far less likely
    assert sw.points[2].distinct_1 > sw.points[0].distinct_1


def _full_logits(lm, prefix, tokens) -> torch.Tensor:
    t = torch.tensor([list(prefix) + list(tokens)])
    with torch.no_grad():
        return lm.model(input_ids=t, attention_mask=torch.ones_like(t)).logits[0].float()  # (T, V)


# --- the page -------------------------------------------------------------------------------

def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.main.metric}


def test_page_drives_sliders_steps_and_temperatures(smollm2):
    at = app_test(page=PAGE)
    assert not at.exception, at.exception
    shown = texts(at)
    assert "Next token" in shown and "How to read this" in [e.label for e in at.expander]
    # first load: the distribution after the default prompt, as the model gives it
    prompt = stp.make_prompt(smollm2.tokenizer, PROMPT, use_chat_template=False)
    logits = direct_logits(smollm2, prompt.ids)
    ref = torch.softmax(logits, -1)
    m = metrics(at)
    assert m["Top token"] == f"{100 * float(ref.max()):.1f}%"
    assert m["Tokens kept"] == "49,152" and m["Mass kept"] == "100.0%"
    assert m["Entropy"] == f"{shape(logits, SamplingSettings()).entropy_bits:.2f} bits"

    # sliders re-render from the cached logits: no forward pass, and the numbers follow the math
    seen = passes.FORWARD_PASSES
    at.slider(key="next_token_temperature").set_value(0.5).run()
    at.number_input(key="next_token_top_k").set_value(5).run()
    at.slider(key="next_token_top_p").set_value(0.6).run()
    at.slider(key="next_token_min_p").set_value(0.1).run()
    assert not at.exception, at.exception
    assert passes.FORWARD_PASSES == seen, "moving a slider ran the model"
    s = SamplingSettings(temperature=0.5, top_k=5, top_p=0.6, min_p=0.1)
    sh = shape(logits, s)
    m = metrics(at)
    assert m["Tokens kept"] == f"{sh.n_kept:,}" and 1 <= sh.n_kept <= 5
    assert m["Top token"] == f"{100 * sh.top_probability:.1f}%"
    assert m["Mass kept"] == f"{100 * sh.kept_mass:.1f}%"
    assert at.query_params["temperature"] in (["0.5"], "0.5") and at.query_params["top_k"] in (["5"], "5")

    # temperatures side by side: one caption entry per temperature, numbers from the same logits
    at.text_input(key="next_token_temps").set_value("0, 1, 2").run()
    assert passes.FORWARD_PASSES == seen
    cap = next(c.value for c in at.caption if c.value.startswith("T = 0"))
    for t in (0.0, 1.0, 2.0):
        sh_t = shape(logits, SamplingSettings(temperature=t, top_k=5, top_p=0.6, min_p=0.1))
        assert f"T = {t:g}: top token {100 * sh_t.top_probability:.1f}%, entropy {sh_t.entropy_bits:.2f} bits" in cap
    at.text_input(key="next_token_temps").set_value("0.5, hot").run()
    assert any("'hot' is not a number" in e.value for e in at.error)
    assert at.text_input(key="next_token_temps").value == "0.5, hot"  # the input is kept

    # step forward: greedy, then the picked alternative; one pass per new token; undo runs nothing
    at.slider(key="next_token_temperature").set_value(1.0)
    at.number_input(key="next_token_top_k").set_value(0)
    at.slider(key="next_token_top_p").set_value(1.0)
    at.slider(key="next_token_min_p").set_value(0.0).run()
    at.button(key="next_token_step_greedy").click().run()
    assert passes.FORWARD_PASSES == seen + 1
    top_id = int(logits.argmax())
    first = smollm2.tokenizer.decode([top_id]).replace(" ", "␣")
    assert f"1 token walked · last: {first} (greedy), model probability {100 * float(ref.max()):.1f}%, rank 1" in texts(at)
    pick = at.selectbox(key="next_token_pick")
    third = pick.options[2]
    pick.select_index(2).run()
    at.button(key="next_token_step_pick").click().run()
    assert passes.FORWARD_PASSES == seen + 2
    rows = at.main.dataframe[0].value
    assert list(rows["how"]) == ["greedy", "picked"] and list(rows["rank"]) == [1, 3]
    assert rows["token"].iloc[1] in third
    walk_param = at.query_params["walk"]
    at.button(key="next_token_undo").click().run()
    assert passes.FORWARD_PASSES == seen + 2  # undo comes from the cache
    assert "1 token walked" in texts(at)
    at.button(key="next_token_step_sample").click().run()
    assert "2 tokens walked" in texts(at) and "(sampled)" in texts(at)
    at.button(key="next_token_reset").click().run()
    assert not WALKED.search(texts(at)) and metrics(at)["Top token"] == f"{100 * float(ref.max()):.1f}%"
    assert not at.exception
    assert walk_param in (["%dg.%dp" % (top_id, int(rows["id"].iloc[1]))], "%dg.%dp" % (top_id, int(rows["id"].iloc[1])))


def test_page_link_replays_a_walk_side_by_side_with_gemma_and_runs_the_sweep(smollm2, gemma):
    prompt = stp.make_prompt(smollm2.tokenizer, PROMPT, use_chat_template=False)
    walk = stp.greedy_walk(smollm2, prompt.ids, 3)
    at = app_test(page=PAGE, query={"walk": walk.to_param(), "model_b": "gemma-3-270m", "chat": "true",
                                    "temps": "0, 1.5", "n_samples": "2", "n_tokens": "6"})
    assert not at.exception, at.exception
    shown = texts(at)
    assert "3 tokens walked" in shown
    assert "Gemma 3 270M (base) has no chat template (a base model): it reads the prompt raw." in shown
    assert "**Gemma 3 270M (base)** · next token after" in shown
    # with the chat toggle on the walk was for another prompt, so it is not this one's: check the raw one
    at.toggle(key="next_token_chat").set_value(False).run()
    assert not WALKED.search(texts(at))  # a new prompt starts a new walk
    at = app_test(page=PAGE, query={"walk": walk.to_param(), "model_b": "gemma-3-270m", "temps": "0, 1.5",
                                    "n_samples": "2", "n_tokens": "6"})
    assert "3 tokens walked" in texts(at)
    # Gemma reads the same text: the prompt and the three walked tokens, through its own tokenizer
    text = PROMPT + smollm2.tokenizer.decode(list(walk.token_ids))
    g_ids = stp.make_prompt(gemma.tokenizer, text, use_chat_template=False).ids
    g_ref = torch.softmax(direct_logits(gemma, g_ids), -1)
    tops = [m.value for m in at.main.metric if m.label == "Top token"]
    assert tops[1] == f"{100 * float(g_ref.max()):.1f}%"
    assert f"next token after {len(g_ids):,} tokens" in texts(at)
    at.button(key="next_token_run_sweep").click().run()
    assert not at.exception, at.exception
    table = at.main.dataframe[-1].value
    assert list(table["temperature"]) == [0.0, 1.5]
    assert table["distinct-2"].iloc[0] == pytest.approx(0.5, abs=0.01)  # two identical greedy samples
    assert (table["tokens"] <= 12).all()


@pytest.mark.browser
def test_next_token_page_in_chromium(app_url, page):
    # the link sets two sliders and a small sweep
    page.goto(f"{app_url}/next_token?top_p=0.8&temperature=0.9&n_samples=3&n_tokens=12")
    page.get_by_role("heading", name="Next token").first.wait_for()
    page.get_by_text("Tokens kept").first.wait_for()
    wait_idle(page)
    page.get_by_role("button", name="Greedy").click()
    page.get_by_text("1 token walked").wait_for()
    page.get_by_role("button", name="Sample next").click()
    page.get_by_text("2 tokens walked").wait_for()
    page.get_by_role("button", name="Undo").click()
    page.get_by_text("1 token walked").wait_for()
    wait_idle(page)
    assert "walk=" in page.url and "top_p=0.8" in page.url
    page.mouse.move(5, 5)  # no tooltip in the picture
    page.set_viewport_size({"width": 1400, "height": 3000})  # the page scrolls inside Streamlit's own container
    wait_idle(page)
    page.get_by_text("T = 1.5").first.wait_for()
    page.wait_for_timeout(800)
    screenshot(page, "next-token")
    page.get_by_role("button", name="Run the sweep").click()
    page.get_by_text("batched model calls").first.wait_for(timeout=180_000)  # the finished status
    wait_idle(page)
    page.wait_for_timeout(800)
    screenshot(page, "next-token-sweep")
