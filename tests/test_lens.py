"""The logit lens on the real bundled models, its bounds, the Logit lens page (AppTest) and the page
in Chromium."""

from __future__ import annotations

import base64
import dataclasses
import json

import numpy as np
import pytest
import torch

from components.lens import WINDOW
from playground import lens
from playground import passes
from playground.errors import InputError
from playground.limits import LimitError
from tests.conftest import app_test, screenshot, texts, wait_idle

SHORT = "The Eiffel Tower is in the city of"


@pytest.fixture(scope="module", params=["smollm2", "gemma"])
def model(request):
    return request.getfixturevalue(request.param)


def direct_probs(lm, ids: list[int]) -> torch.Tensor:
    """softmax of the model's own logits at every position, straight from transformers: (T, V)."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = lm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0].float()
    return torch.softmax(logits, dim=-1)


def _check_equals_model(lm, ids, result, probs, tracked):
    t, rows = len(ids), lm.num_layers + 1
    assert result.top_ids.shape == result.top_probs.shape == result.final_probs.shape == (rows, t)
    assert result.tracked_probs.shape == (len(tracked), rows, t)
    assert result.states.shape[:2] == (rows, t) and len(result.top_texts) == rows and len(result.top_texts[0]) == t
    for p in (result.top_probs, result.final_probs, result.tracked_probs):
        assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    # the last row is the model's own next-token distribution, at every position
    top_p, top_i = probs.max(dim=-1)  # (T,)
    assert result.top_ids[-1].tolist() == top_i.tolist()
    torch.testing.assert_close(result.top_probs[-1], top_p, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(result.final_probs[-1], result.top_probs[-1])
    for k, tok in enumerate(tracked):
        torch.testing.assert_close(result.tracked_probs[k, -1], probs[:, tok], atol=2e-5, rtol=1e-4)
    # no row gives the final prediction more than its own top token
    assert bool((result.final_probs <= result.top_probs + 1e-6).all())


def test_last_layer_equals_the_models_own_distribution(model):
    ids = lens.encode(model, SHORT)
    paris, _ = lens.token_of(model, " Paris")
    london, _ = lens.token_of(model, " London")
    result = lens.logit_lens(model, ids, track=[paris, london])
    probs = direct_probs(model, ids)
    _check_equals_model(model, ids, result, probs, [paris, london])
    # and the Next token page's distribution for the whole text
    dist = passes.next_token_distribution(model, ids).probs()
    assert int(result.top_ids[-1, -1]) == int(dist.argmax())
    assert abs(float(result.tracked_probs[0, -1, -1]) - float(dist[paris])) < 2e-5
    assert result.output_was_normed and result.norm_name == "model.norm"  # transformers 5 ties hidden_states[-1]
    assert result.labels[-1].strip() == "of" and result.vocab_size == dist.numel()
    # both models end on ' Paris'; earlier layers predict something else at that position
    assert result.top_texts[-1][-1] == " Paris"
    assert 0 < result.first_row_with_final(len(ids) - 1) < model.num_layers
    # follow() from the kept states: the same probabilities, ranks as the full logits give them
    tr = lens.follow(model, result, len(ids) - 1, london)
    torch.testing.assert_close(tr.probs, result.tracked_probs[1, :, -1])
    want_rank = int((probs[-1] > probs[-1, london]).sum()) + 1
    assert int(tr.ranks[-1]) == want_rank and tr.text == " London"
    top = lens.follow(model, result, len(ids) - 1, int(result.top_ids[-1, -1]))
    assert int(top.ranks[-1]) == 1 and int(top.ranks[0]) > 1
    cands = lens.candidates(result, len(ids) - 1, model)
    assert cands[0] == paris and len(set(cands)) == len(cands)


def test_middle_rows_are_the_normed_hidden_states_through_the_head(smollm2):
    ids = lens.encode(smollm2, SHORT)
    result = lens.logit_lens(smollm2, ids)
    x = torch.tensor([ids])
    with torch.no_grad():
        hs = smollm2.model(input_ids=x, output_hidden_states=True).hidden_states
        layer = 12
        p = torch.softmax(smollm2.model.lm_head(smollm2.model.model.norm(hs[layer][0])), dim=-1)  # (T, V)
    assert result.top_ids[layer].tolist() == p.argmax(-1).tolist()
    torch.testing.assert_close(result.top_probs[layer], p.max(-1).values, atol=2e-5, rtol=1e-4)


def test_a_last_hidden_state_before_the_norm_is_normed(smollm2):
    """With tie_last_hidden_states off, transformers gives hidden_states[-1] before the final norm; the
    lens notices and norms it, and still equals the model's distribution."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(smollm2.folder)
    cfg.tie_last_hidden_states = False
    raw = AutoModelForCausalLM.from_pretrained(smollm2.folder, config=cfg).eval()
    lm = dataclasses.replace(smollm2, model=raw)
    ids = lens.encode(lm, SHORT)
    x = torch.tensor([ids])
    with torch.no_grad():
        out = raw(input_ids=x, output_hidden_states=True)
        last = out.hidden_states[-1][0]
        assert float((raw.model.norm(last) - last).abs().max()) > 1.0  # really not normed
    result = lens.logit_lens(lm, ids, track=[lens.token_of(lm, " Paris")[0]])
    assert not result.output_was_normed
    _check_equals_model(lm, ids, result, direct_probs(lm, ids), [lens.token_of(lm, " Paris")[0]])


@pytest.mark.parametrize("variant", ["smollm2-135m-instruct:bf16", "smollm2-135m-instruct:int8"])
def test_precision_variants_end_on_the_next_token_pages_distribution(variant):
    """bf16 runs the head in bf16; int8 quantizes the head's input per call, so its rows go one at a time.
    Dynamic int8 scales every layer's input by the whole text's range, so an earlier position of the
    text is not the same as that prefix alone: for int8 only the last position is compared."""
    from playground.loading import load_causal_lm

    lm = load_causal_lm(variant)
    ids = lens.encode(lm, SHORT)
    paris = lens.token_of(lm, " Paris")[0]
    result = lens.logit_lens(lm, ids, track=[paris])
    for t in (len(ids) - 1,) if variant.endswith("int8") else (len(ids) - 1, 3):
        dist = passes.next_token_distribution(lm, ids[: t + 1]).probs()
        assert int(result.top_ids[-1, t]) == int(dist.argmax())
        assert abs(float(result.top_probs[-1, t]) - float(dist.max())) < 1e-4
        assert abs(float(result.tracked_probs[0, -1, t]) - float(dist[paris])) < 1e-4
    tr = lens.follow(lm, result, len(ids) - 1, paris)
    assert abs(float(tr.probs[-1]) - float(result.tracked_probs[0, -1, -1])) < 1e-5


def test_any_causal_lm_gpt2_with_ln_f(smollm2):
    """A GPT-2 (random weights, made here) keeps its final norm as transformer.ln_f."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=smollm2.tokenizer.vocab_size, n_positions=64, n_embd=32, n_layer=3, n_head=2)
    gpt2 = GPT2LMHeadModel(cfg).eval()
    lm = dataclasses.replace(smollm2, model=gpt2)
    ids = lens.encode(lm, SHORT)
    result = lens.logit_lens(lm, ids, track=[5, 77])
    assert result.norm_name == "transformer.ln_f" and result.num_rows == 4
    _check_equals_model(lm, ids, result, direct_probs(lm, ids), [5, 77])


def test_blocks_do_not_change_the_result_and_bounds_are_stated(smollm2):
    ids = lens.encode(smollm2, SHORT)
    whole = lens.logit_lens(smollm2, ids, track=[11])
    tiny = lens.logit_lens(smollm2, ids, track=[11], block_bytes=1)  # one row of logits at a time
    assert whole.top_ids.tolist() == tiny.top_ids.tolist()
    # float32 matmuls over other block shapes round differently, by a few 1e-6
    torch.testing.assert_close(whole.top_probs, tiny.top_probs, atol=2e-5, rtol=0)
    torch.testing.assert_close(whole.tracked_probs, tiny.tracked_probs, atol=2e-5, rtol=0)
    with pytest.raises(InputError, match="empty"):
        lens.encode(smollm2, "   ")
    long_ids = list(range(100, 700))
    with pytest.raises(LimitError, match=r"is 600 tokens; at most 512 tokens are allowed .*Shorten it"):
        lens.logit_lens(smollm2, long_ids)
    with pytest.raises(InputError, match="outside .*vocabulary of 49,152"):
        lens.logit_lens(smollm2, ids, track=[10**6])
    with pytest.raises(InputError, match="Position 99 is outside the text's 9 tokens"):
        lens.follow(smollm2, whole, 99, 5)
    tok, note = lens.token_of(smollm2, " Eiffelstadt")
    assert note and "tokens for SmolLM2" in note and "the first" in note


# --- the page -------------------------------------------------------------------------------------


def _figure(at, key_suffix: str) -> dict:
    for chart in at.get("plotly_chart"):
        if chart.proto.id.endswith(key_suffix):
            return json.loads(chart.proto.spec)
    raise AssertionError(f"no chart {key_suffix}")


def _arr(v) -> np.ndarray:
    if isinstance(v, dict):  # plotly's typed array: base64 bytes, dtype and shape
        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = [int(x) for x in str(v.get("shape", len(arr))).split(",")]
        return arr.reshape(shape)
    return np.asarray(v, dtype=float)


def test_page_grid_position_token_and_model(smollm2, gemma):
    at = app_test("views/lens.py")
    assert not at.exception and not at.error
    ids = lens.encode(smollm2, lens.DEFAULT_TEXT)
    want = lens.logit_lens(smollm2, ids)
    grid = _figure(at, "lens_grid")["data"][0]
    np.testing.assert_allclose(_arr(grid["z"]), want.top_probs.numpy(), atol=1e-6)
    assert grid["text"][-1][-1] == "␣Paris" and len(grid["y"]) == 31
    shown = texts(at)
    assert "9 positions × 31 rows" in shown and "predicts **␣Paris** (65.6%)" in shown
    assert "Not listed:" in shown and "llama.cpp" in shown
    assert at.selectbox(key="lens_position").value == len(ids) - 1
    runs = lens.RUNS

    # another position: the line chart follows it, from the kept states
    at.selectbox(key="lens_position").set_value(3).run()
    assert not at.exception
    traj = _figure(at, "lens_trajectory")["data"]
    final_id = int(want.top_ids[-1, 3])
    np.testing.assert_allclose(traj[0]["y"], lens.follow(smollm2, want, 3, final_id).probs.numpy(), atol=1e-6)
    assert f"After **·3 {want.labels[3].replace(' ', '␣')}**" in texts(at)
    # a picked token and a typed one
    cands = at.selectbox(key="lens_token").options
    assert len(cands) >= 2
    at.selectbox(key="lens_position").set_value(len(ids) - 1).run()
    london = lens.token_of(smollm2, " London")[0]
    at.text_input(key="lens_typed").set_value(" London").run()
    traj = _figure(at, "lens_trajectory")["data"]
    np.testing.assert_allclose(traj[1]["y"], lens.follow(smollm2, want, len(ids) - 1, london).probs.numpy(), atol=1e-6)
    assert "**␣London**:" in texts(at)
    assert lens.RUNS == runs, "pickers re-render from the kept lens"
    assert at.query_params["typed"] in ([" London"], " London")
    at.radio(key="lens_scale").set_value("log").run()
    fig = _figure(at, "lens_trajectory")
    assert fig["layout"]["yaxis"]["type"] == "log"
    np.testing.assert_allclose(fig["data"][1]["y"], lens.follow(smollm2, want, len(ids) - 1, london).probs.numpy(), atol=1e-6)

    # Gemma: its own rows, its own prediction
    at.text_input(key="lens_typed").set_value("").run()
    at.selectbox(key="lens_model").set_value("gemma-3-270m").run()
    assert not at.exception and not at.error
    g_ids = lens.encode(gemma, lens.DEFAULT_TEXT)
    grid = _figure(at, "lens_grid")["data"][0]
    assert len(grid["y"]) == 19 and _arr(grid["z"]).shape == (19, len(g_ids))
    assert "vocabulary 262,144" in texts(at) and at.selectbox(key="lens_position").value == len(g_ids) - 1

    # too long: the numbers and what to do, the text kept; empty: what to do
    long_text = "word " * 700
    at.text_area(key="lens_text").set_value(long_text).run()
    errors = [e.value for e in at.error]
    assert any("at most 512 tokens" in e and "Shorten it" in e for e in errors), errors
    assert at.text_area(key="lens_text").value == long_text
    at.text_area(key="lens_text").set_value("  ").run()
    assert any("Type a text" in i.value for i in at.info)


def test_page_window_over_a_longer_text_and_a_link(smollm2):
    text = "One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
           "seventeen eighteen nineteen twenty twenty-one twenty-two twenty-three twenty-four twenty-five"
    at = app_test("views/lens.py", query={"text": text, "position": "3", "model_a": "no such model!"})
    assert not at.exception
    assert any("no such model!" in w.value for w in at.warning)  # a bad link value is said, and the default used
    assert at.selectbox(key="lens_model").value == "smollm2-135m-instruct"
    n = len(lens.encode(smollm2, text))
    assert n > WINDOW + 4 and WINDOW == 24
    assert at.selectbox(key="lens_position").value == 3 and at.slider(key="lens_start").value == 0
    at.slider(key="lens_start").set_value(n - 24).run()
    assert not at.exception
    grid = _figure(at, "lens_grid")["data"][0]
    assert _arr(grid["z"]).shape == (31, 24)
    assert at.selectbox(key="lens_position").value == n - 24  # the position moved into the window
    shown = [int(o.split("·")[1].split()[0]) for o in at.selectbox(key="lens_position").options]
    assert shown == list(range(n - 24, n))


@pytest.mark.browser
def test_lens_page_in_chromium(app_url, page):
    page.goto(f"{app_url}/lens")
    page.get_by_role("heading", name="Logit lens").first.wait_for()
    page.get_by_text("Every layer's guess").wait_for()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 2")
    wait_idle(page)
    content = page.content()
    assert "31 rows" in content and "Paris" in content
    # type a token to follow: the line chart gets its line and the page says where it stands
    box = page.get_by_role("textbox", name="Or type a token")
    box.fill(" London")
    box.press("Enter")
    page.get_by_text("The typed token is followed").wait_for()
    wait_idle(page)
    assert "␣London" in page.locator('[data-testid="stMarkdownContainer"]').filter(has_text="at the output").inner_text()
    page.wait_for_function("() => location.href.includes('typed=')")
    page.set_viewport_size({"width": 1400, "height": 2700})
    page.wait_for_timeout(1500)
    screenshot(page, "lens")
