"""The Next token page's logit lens and attribution sections (components.next_token_inside):
AppTest against the core computed directly, and the attribution section in Chromium."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from playground import attribution as attr
from playground import lens
from playground import stepping as stp
from tests.conftest import app_test, screenshot, texts, wait_idle

PROMPT = "Once upon a time, in a small village by the sea, there lived a"
PAGE = "views/next_token.py"


def _figure(at, key_suffix: str) -> dict:
    for chart in at.get("plotly_chart"):
        if chart.proto.id.endswith(key_suffix):
            return json.loads(chart.proto.spec)
    raise AssertionError(f"no chart {key_suffix}")


def _arr(v) -> np.ndarray:
    if isinstance(v, dict):  # plotly's typed array
        import base64

        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = [int(x) for x in str(v.get("shape", len(arr))).split(",")]
        return arr.reshape(shape)
    return np.asarray(v, dtype=float)


def page_probs(lm, ids) -> torch.Tensor:
    """The page's distribution after `ids`, straight from the model: softmax of the last logits (V,)."""
    x = torch.tensor([list(ids)])
    with torch.no_grad():
        return torch.softmax(lm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, -1].float(), -1)


def _table(at, key: str):
    """The attribution table (AppTest gives data frames no key: it is the one with a share column)."""
    return next(d.value for d in at.dataframe if "share of |scores|" in d.value.columns)


def test_lens_section_ends_on_the_pages_distribution_and_follows_the_walk(smollm2):
    at = app_test(page=PAGE)
    assert not at.exception
    assert "Turn it on to see, layer by layer" in texts(at)  # off by default: the page runs no lens
    runs = lens.RUNS
    at.toggle(key="next_token_lens_on").set_value(True).run()
    assert not at.exception and not at.error
    assert lens.RUNS == runs + 1
    ids = stp.make_prompt(smollm2.tokenizer, PROMPT, False).ids
    p = page_probs(smollm2, ids)
    grid = _figure(at, "next_token_lens_grid")["data"][0]
    z = _arr(grid["z"])
    assert z.shape == (smollm2.num_layers + 1, len(ids))
    # the last layer at the last position is the page's distribution: its top token and probability
    assert z[-1, -1] == pytest.approx(float(p.max()), abs=2e-5)
    assert grid["text"][-1][-1] == at.selectbox(key="next_token_pick").options[0].split()[1]
    assert at.selectbox(key="next_token_lens_position").value == len(ids) - 1
    traj = _figure(at, "next_token_lens_trajectory")["data"]
    assert traj[0]["y"][-1] == pytest.approx(float(p.max()), abs=2e-5)
    # a picked token: its probability at the output row is the page's probability for it
    cands = at.selectbox(key="next_token_lens_token").options
    at.selectbox(key="next_token_lens_token").set_value(at.selectbox(key="next_token_lens_token").options[2]).run()
    picked = int(at.selectbox(key="next_token_lens_token").value)
    traj = _figure(at, "next_token_lens_trajectory")["data"]
    assert traj[1]["y"][-1] == pytest.approx(float(p[picked]), abs=2e-5) and len(cands) >= 3
    assert lens.RUNS == runs + 1, "pickers re-render from the kept lens"
    assert "The top row here is the distribution in the bars above." in texts(at)
    assert at.query_params["lens"] in (["true"], "true")
    # a step of the walk: the lens of the new prefix, its last column the new distribution
    at.button(key="next_token_step_greedy").click().run()
    assert not at.exception
    ids2 = ids + (int(p.argmax()),)
    z = _arr(_figure(at, "next_token_lens_grid")["data"][0]["z"])
    assert z.shape[1] == len(ids2) and z[-1, -1] == pytest.approx(float(page_probs(smollm2, ids2).max()), abs=2e-5)
    assert lens.RUNS == runs + 2


def test_attribution_section_methods_contrast_gemma_and_bounds(smollm2, gemma):
    at = app_test(page=PAGE, query={"why": "true"})
    assert not at.exception and not at.error
    ids = list(stp.make_prompt(smollm2.tokenizer, PROMPT, False).ids)
    p = page_probs(smollm2, ids)
    top, second = torch.topk(p, 2).indices.tolist()
    # first load with the link: gradient x input for the top token, at once
    assert at.selectbox(key="next_token_attr_target").value == top
    want = attr.gradient_x_input(smollm2, ids, top)
    table = _table(at, "next_token_attr_table")
    np.testing.assert_allclose(table["score"].to_numpy(), want.scores.numpy(), atol=1e-4)
    assert list(table["id"]) == ids
    shown = texts(at)
    assert "Gradient × input" in shown and f"= {want.f_input:.3f} nats" in shown
    md = "\n".join(m.value for m in at.markdown)
    assert 'class="attribution-text"' in md and md.count("data-score=") == len(ids)

    # rather than the second token: the difference of the two log-probabilities
    at.selectbox(key="next_token_attr_contrast").set_value(second).run()
    assert not at.exception
    both = attr.gradient_x_input(smollm2, ids, top, contrast=second)
    np.testing.assert_allclose(_table(at, "next_token_attr_table")["score"].to_numpy(), both.scores.numpy(), atol=1e-4)
    assert f"{both.f_input:.3f} nats" in texts(at) and both.f_input == pytest.approx(
        float(torch.log(p[top]) - torch.log(p[second])), abs=1e-4)

    # integrated gradients waits for its button; then the completeness check
    at.radio(key="next_token_attr_method").set_value("integrated_gradients").run()
    assert "Press *Run* for integrated gradients" in texts(at)
    at.slider(key="next_token_attr_steps").set_value(8).run()
    at.button(key="next_token_attr_run").click().run()
    assert not at.exception and not at.error
    ig = attr.integrated_gradients(smollm2, ids, top, contrast=second, steps=8)
    np.testing.assert_allclose(_table(at, "next_token_attr_table")["score"].to_numpy(), ig.scores.numpy(), atol=1e-3)
    assert f"the scores add up to **{ig.total:.3f}**" in texts(at)
    assert at.query_params["why_steps"] in (["8"], "8")

    # rollout: the same for every token, a share that adds up to 1
    at.radio(key="next_token_attr_method").set_value("attention_rollout").run()
    assert not at.exception
    assert "no contrastive form" in texts(at)
    np.testing.assert_allclose(_table(at, "next_token_attr_table")["score"].sum(), 1.0, atol=1e-3)

    # Gemma 3: its own tokens (with <bos>) and scores
    at.radio(key="next_token_attr_method").set_value("gradient_x_input").run()
    at.selectbox(key="next_token_model").set_value("gemma-3-270m").run()
    assert not at.exception and not at.error
    g_ids = list(stp.make_prompt(gemma.tokenizer, PROMPT, False).ids)
    g_top = int(page_probs(gemma, g_ids).argmax())
    assert at.selectbox(key="next_token_attr_target").value == g_top
    g_table = _table(at, "next_token_attr_table")
    assert list(g_table["id"]) == g_ids and g_ids[0] == gemma.tokenizer.bos_token_id
    np.testing.assert_allclose(g_table["score"].to_numpy(), attr.gradient_x_input(gemma, g_ids, g_top).scores.numpy(),
                               atol=1e-4, rtol=1e-4)
    at.selectbox(key="next_token_model").set_value("smollm2-135m-instruct").run()

    # too long a prefix: the numbers and what to do; the page's other sections still draw
    at.text_area(key="next_token_prompt").set_value("word " * 300).run()
    assert not at.exception
    assert any("at most 256 tokens" in e.value and "Shorten it" in e.value for e in at.error), [e.value for e in at.error]
    assert "Temperatures side by side" in texts(at)

    # a llama.cpp entry: what to pick instead, and the page goes on
    at.text_area(key="next_token_prompt").set_value(PROMPT).run()
    at.selectbox(key="next_token_model").set_value("smollm2-135m-instruct:gguf").run()
    assert not at.exception
    assert any("Attribution needs the model's weights in PyTorch" in i.value for i in at.info)
    assert "Temperatures side by side" in texts(at)


@pytest.mark.browser
def test_attribution_section_in_chromium(app_url, page):
    page.goto(f"{app_url}/next_token?why=true")
    page.get_by_role("heading", name="Why this token?").first.wait_for()
    page.locator(".attribution-text").first.wait_for()
    wait_idle(page)
    assert page.locator(".attribution-text span[data-score]").count() >= 10
    # rather than the second token of the bars
    page.locator(".st-key-next_token_attr_contrast").get_by_role("combobox").click()
    page.keyboard.press("ArrowDown")  # opens the list
    page.get_by_role("option", name="#2 ").first.click()
    page.get_by_text("nats at your text").first.wait_for()
    wait_idle(page)
    assert "− log p(" in page.locator('[data-testid="stCaptionContainer"]').filter(has_text="nats at your text").inner_text()
    section = page.get_by_role("heading", name="Why this token?").first
    section.scroll_into_view_if_needed()
    page.mouse.move(5, 5)
    page.set_viewport_size({"width": 1400, "height": 3400})
    page.wait_for_timeout(1200)
    screenshot(page, "next-token-attribution")
