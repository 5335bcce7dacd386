"""Attention maps on the real bundled models, their reductions, the Attention page (AppTest) and
the page in Chromium."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
import torch

from components import attention as figs
from playground import attention as attn
from playground import passes as pin
from playground.errors import ContextLengthError, InputError
from tests.conftest import app_test, screenshot, texts, wait_idle

SHORT = "The animal didn't cross the street because it was too tired."
LONG = " ".join(
    [
        "Attention lets every token look back at the tokens before it and decide what matters.",
        "In a small model some heads look at the previous token, some at the first token,",
        "and a few follow a word to the word it refers to, like a pronoun to its noun.",
        "Long inputs make the maps large, so the page shows a window and small thumbnails.",
    ]
)


@pytest.fixture(scope="module", params=["smollm2", "gemma", "minilm"])
def model(request):
    return request.getfixturevalue(request.param)


_EAGER: dict[str, object] = {}


def eager_reference(lm):
    """The same weights loaded on their own with transformers' eager attention: an independent
    reference (the app's causal LMs run SDPA unless the weights are asked for, playground.attend)."""
    if not lm.spec.can_generate:
        return lm.model  # encoders load eager
    if lm.spec.id not in _EAGER:
        from transformers import AutoModelForCausalLM

        _EAGER[lm.spec.id] = AutoModelForCausalLM.from_pretrained(lm.folder, attn_implementation="eager").eval()
    return _EAGER[lm.spec.id]


def direct_attentions(lm, ids: list[int]) -> torch.Tensor:
    """What transformers itself returns with output_attentions=True, stacked: (layers, heads, T, T)."""
    x = torch.tensor([ids])
    with torch.no_grad():
        out = eager_reference(lm)(input_ids=x, attention_mask=torch.ones_like(x), output_attentions=True)
    return torch.stack([a[0].float() for a in out.attentions])


# --- the maps -------------------------------------------------------------------------------------


def test_maps_shapes_rows_causality_and_equal_output_attentions(model):
    ids = attn.encode(model, SHORT)
    maps = pin.attention_maps(model, ids)
    t = len(ids)
    assert maps.shape == (model.num_layers, model.num_heads, t, t)
    assert maps.precision == "float32" and maps.weights.dtype == torch.float32
    assert len(maps.tokens) == len(maps.labels) == t
    rows = maps.weights.sum(-1)  # (layers, heads, T)
    torch.testing.assert_close(rows, torch.ones_like(rows), atol=1e-5, rtol=0)
    upper = torch.triu(maps.weights, diagonal=1)  # everything after the diagonal
    if model.spec.can_generate:
        assert maps.is_causal
        assert float(upper.abs().max()) == 0.0
    else:
        assert not maps.is_causal
        # every head of the encoder puts weight on later tokens, a lot of it on average
        assert float(upper.sum(-1)[..., 0].min()) > 0  # even the first token ([CLS]) looks ahead
        assert float(upper.sum(-1).mean()) > 0.2
    # the maps are what transformers itself returns with output_attentions=True
    expected = direct_attentions(model, ids)
    assert maps.weights.shape == expected.shape
    torch.testing.assert_close(maps.weights, expected, atol=1e-6, rtol=0)


def test_one_forward_pass_per_call(smollm2):
    ids = attn.encode(smollm2, SHORT)
    before = pin.FORWARD_PASSES
    pin.attention_maps(smollm2, ids)
    assert pin.FORWARD_PASSES == before + 1


def test_grouped_query_heads_are_query_heads(smollm2, gemma):
    # Gemma 3: 4 query heads over 1 key/value head; transformers repeats the keys per query head
    maps = pin.attention_maps(gemma, attn.encode(gemma, SHORT))
    assert (maps.num_heads, maps.kv_heads) == (4, 1)
    for a in range(4):
        for b in range(a + 1, 4):
            assert float((maps.weights[:, a] - maps.weights[:, b]).abs().max()) > 1e-2, "heads sharing keys still differ"
    assert {maps.kv_head_of(h) for h in range(4)} == {0}
    s = pin.attention_maps(smollm2, attn.encode(smollm2, SHORT))
    assert (s.num_heads, s.kv_heads) == (9, 3)
    assert [s.kv_head_of(h) for h in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    notes = " ".join(attn.architecture_notes(s))
    assert "9 query heads read 3 key/value heads" in notes and "heads 3–5 share key/value head 1" in notes


def test_gemma_sliding_layers_see_only_their_window(gemma):
    maps = pin.attention_maps(gemma, attn.encode(gemma, LONG * 8))
    t, window = maps.num_tokens, maps.sliding_window
    assert window == 512 and t > window + 20, t
    kinds = maps.layer_kinds
    assert kinds.count("full") == 3 and kinds.count("sliding") == 15
    i = torch.arange(t).reshape(-1, 1)
    j = torch.arange(t).reshape(1, -1)
    too_far = j <= i - window  # (T, T): keys more than window-1 tokens back
    for layer, kind in enumerate(kinds):
        far = float(maps.weights[layer][:, too_far].abs().max())
        if kind == "sliding":
            assert far == 0.0, layer
        else:
            assert far > 0.0, layer
    notes = " ".join(attn.architecture_notes(maps))
    assert "Sliding-window layers** 0–4, 6–10, 12–16" in notes and "layers 5, 11, 17 see the whole text" in notes


# --- window, thumbnails, summaries ----------------------------------------------------------------


@pytest.fixture(scope="module")
def long_maps(smollm2):
    return pin.attention_maps(smollm2, attn.encode(smollm2, LONG))


def test_window_keeps_values_and_row_sums(long_maps, minilm):
    m = long_maps
    t = m.num_tokens
    assert t > 60
    win = attn.window(m, 7, 4, start=30, size=20)
    assert (win.start, win.stop, win.size) == (30, 50, 20)
    assert torch.equal(win.weights, m.weights[7, 4, 30:50, 30:50])
    torch.testing.assert_close(win.before, m.weights[7, 4, 30:50, :30].sum(-1))
    assert float(win.after.abs().max()) == 0.0  # a decoder never looks past its own row
    total = win.before + win.weights.sum(-1) + win.after
    torch.testing.assert_close(total, torch.ones(20), atol=1e-5, rtol=0)
    assert win.labels == m.labels[30:50]
    # the mean over heads
    mean = attn.window(m, 7, None, 30, 20)
    torch.testing.assert_close(mean.weights, m.weights[7, :, 30:50, 30:50].mean(0))
    # a window past the end moves back in; one larger than the text is the whole text
    assert (attn.window(m, 0, 0, t + 5, 10).start, attn.window(m, 0, 0, t + 5, 10).stop) == (t - 10, t)
    assert attn.window(m, 0, 0, 3, 10 * t).size == t
    # an encoder looks both ways: the mass after the window is part of each row
    e = pin.attention_maps(minilm, attn.encode(minilm, LONG))
    ew = attn.window(e, 2, 5, 10, 16)
    assert float(ew.after.min()) > 0
    torch.testing.assert_close(ew.after, e.weights[2, 5, 10:26, 26:].sum(-1))
    torch.testing.assert_close(ew.before + ew.weights.sum(-1) + ew.after, torch.ones(16), atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="layer is 30; .* has layers 0 to 29"):
        attn.window(m, 30, 0, 0, 8)
    with pytest.raises(InputError, match="head is 9"):
        attn.window(m, 0, 9, 0, 8)


def test_thumbnails_keep_row_sums_and_follow_the_rule(long_maps):
    m = long_maps
    t = m.num_tokens
    thumbs = attn.thumbnails(m, cells=8)
    block = math.ceil(t / 8)
    assert thumbs.block == block and t % block != 0, "the test wants a short last block"
    s = math.ceil(t / block)
    assert thumbs.weights.shape == (m.num_layers, m.num_heads, s, s)
    rows = thumbs.weights.sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows), atol=1e-5, rtol=0)
    # the rule, by hand: cell (I, J) = mean over rows of block I of the sum over columns of block J
    w = m.weights[11, 3].double()
    for big_i in (0, 3, s - 1):
        for big_j in (0, 2, s - 1):
            r0, r1 = big_i * block, min((big_i + 1) * block, t)
            c0, c1 = big_j * block, min((big_j + 1) * block, t)
            want = float(w[r0:r1, c0:c1].sum(-1).mean())
            assert abs(float(thumbs.weights[11, 3, big_i, big_j]) - want) < 1e-6, (big_i, big_j)
    assert thumbs.span(s - 1) == ((s - 1) * block, t)
    # causal stays causal above the diagonal of blocks; block 1 is the map itself
    assert float(torch.triu(thumbs.weights, diagonal=1).abs().max()) == 0.0
    assert torch.equal(attn.thumbnails(m, cells=t).weights, m.weights)
    # the layer means are the thumbnails of the head-mean maps
    torch.testing.assert_close(thumbs.layer_means[5], attn.downsample(attn.head_map(m, 5, None), block))


def test_summaries(long_maps):
    m = long_maps
    s = attn.summarize(m)
    assert s.entropy_bits.shape == s.sink.shape == (m.num_layers, m.num_heads)
    w = m.weights[4, 2].double()
    rows = [-sum(float(p) * math.log2(float(p)) for p in w[i] if p > 0) for i in range(m.num_tokens)]
    assert abs(float(s.entropy_bits[4, 2]) - sum(rows) / len(rows)) < 1e-4
    assert abs(float(s.sink[4, 2]) - float(w[1:, 0].mean())) < 1e-6
    torch.testing.assert_close(s.sink_per_layer, s.sink.mean(1))
    want_uniform = sum(math.log2(i + 1) for i in range(m.num_tokens)) / m.num_tokens
    assert abs(float(s.uniform_bits[0]) - want_uniform) < 1e-4
    assert float(s.entropy_bits.min()) >= 0 and float(s.entropy_bits.max()) <= want_uniform * 2
    assert s.first_token == m.labels[0]
    layer, head, bits = s.most_focused()
    assert bits == pytest.approx(float(s.entropy_bits.min())) and float(s.entropy_bits[layer, head]) == pytest.approx(bits)
    sink_layer, share = s.strongest_sink_layer()
    assert share == pytest.approx(float(s.sink_per_layer.max())) and float(s.sink_per_layer[sink_layer]) == pytest.approx(share)
    row = m.weights[3, 1, 40]
    top = attn.top_keys(row, 3)
    assert [j for j, _ in top] == torch.argsort(row, descending=True)[:3].tolist()
    assert top[0][1] == pytest.approx(float(row.max()))


def test_token_attention_and_strongest_link(long_maps):
    m = long_maps
    ta = attn.token_attention(m, 40, head=6)
    assert torch.equal(ta.weights, m.weights[:, 6, 40])
    avg = attn.token_attention(m, 40)
    torch.testing.assert_close(avg.weights, m.weights[:, :, 40].mean(1))
    torch.testing.assert_close(avg.weights.sum(-1), torch.ones(m.num_layers), atol=1e-5, rtol=0)
    i = attn.find_token(m, "it")
    assert i is not None and m.labels[i].strip() == "it"
    link = attn.strongest_link(m, i)
    assert link.key not in (0, i, i - 1, i + 1)
    assert link.weight == pytest.approx(float(m.weights[link.layer, link.head, i, link.key]))
    allowed = m.weights[:, :, i].clone()
    allowed[:, :, [0, i - 1, i]] = 0
    assert link.weight == pytest.approx(float(allowed.max()))


# --- limits ---------------------------------------------------------------------------------------


def test_too_long_for_the_context_says_so(minilm):
    text = "word " * 700
    before = pin.FORWARD_PASSES
    with pytest.raises(ContextLengthError) as err:
        attn.analyse(minilm, text)
    n = len(minilm.tokenizer(text)["input_ids"])
    assert f"The text is {n:,} tokens; all-MiniLM-L6-v2's context is 512" in str(err.value)
    assert pin.FORWARD_PASSES == before, "the model never runs on a text that does not fit"
    with pytest.raises(InputError, match="empty"):
        attn.encode(minilm, "   ")


def test_memory_budget_half_precision_and_refusal(smollm2):
    ids = attn.encode(smollm2, SHORT)
    exact = pin.attention_maps(smollm2, ids)
    half = pin.attention_maps(smollm2, ids, float32_bytes=0)  # as a long text would be kept
    assert half.precision == "float16" and half.weights.dtype == torch.float16
    assert half.nbytes * 2 == exact.nbytes
    torch.testing.assert_close(half.weights.float(), exact.weights, atol=1e-3, rtol=0)
    rows = attn.thumbnails(half, 4).weights.sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows), atol=3e-3, rtol=0)
    budget = 270 * 10 * 10 * 2  # room for 10 tokens of maps at half precision
    with pytest.raises(InputError, match=rf"The text is {len(ids)} tokens; .*270 attention maps.*Up to 10 tokens fit"):
        pin.attention_maps(smollm2, ids, max_bytes=budget)
    # the defaults: SmolLM2 keeps 2,048 tokens (in float16), and refuses its full 8,192-token context
    assert pin.storage_precision(smollm2, 2048) == torch.float16
    assert pin.storage_precision(smollm2, 500) == torch.float32
    with pytest.raises(InputError, match="Up to 2,229 tokens fit"):
        pin.storage_precision(smollm2, 8192)


# --- the page -------------------------------------------------------------------------------------


def _figure(at, key_suffix: str) -> dict:
    for chart in at.get("plotly_chart"):
        if chart.proto.id.endswith(key_suffix):
            return json.loads(chart.proto.spec)
    raise AssertionError(f"no chart {key_suffix}")


def _z(trace: dict) -> np.ndarray:
    z = trace["z"]
    if isinstance(z, dict):  # plotly's typed array: base64 bytes, dtype and shape
        arr = np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"]))
        shape = [int(x) for x in str(z.get("shape", len(arr))).split(",")]
        return arr.reshape(shape)
    return np.asarray(z, dtype=float)


def _head_z(at, slot: str = "a") -> np.ndarray:
    fig = _figure(at, f"attention_head_fig_{slot}")
    return _z(next(t for t in fig["data"] if t.get("name") == "window"))


def test_page_drives_pickers_without_rerunning_the_model(smollm2):
    at = app_test("views/attention.py")
    assert not at.exception
    shown = texts(at)
    assert "Decoder (causal)" in shown and "Grouped-query attention" in shown
    ids = attn.encode(smollm2, attn.DEFAULT_TEXT)
    t = len(ids)
    assert f"shape (30, 9, {t}, {t})" in shown
    direct = direct_attentions(smollm2, ids)  # (layers, heads, T, T) straight from transformers
    # first load opens on the head where ' it' draws most on another word, and says so in the pickers
    layer, head = at.slider(key="attention_layer_a").value, at.selectbox(key="attention_head_a").value
    token = at.selectbox(key="attention_token_a").value
    assert smollm2.tokenizer.decode([ids[token]]).strip() == "it"
    link = attn.strongest_link(pin.attention_maps(smollm2, ids), token)
    assert (layer, head) == (link.layer, link.head)
    np.testing.assert_allclose(_head_z(at), direct[layer, head].numpy(), atol=1e-6)
    assert f"Layer {layer}, head {head}" in texts(at)
    passes = pin.FORWARD_PASSES

    at.slider(key="attention_layer_a").set_value(3).run()
    at.selectbox(key="attention_head_a").set_value(7).run()
    assert not at.exception
    np.testing.assert_allclose(_head_z(at), direct[3, 7].numpy(), atol=1e-6)
    assert "Layer 3, head 7" in texts(at)
    at.selectbox(key="attention_head_a").set_value(-1).run()  # mean over heads
    np.testing.assert_allclose(_head_z(at), direct[3].mean(0).numpy(), atol=1e-6)
    assert "Layer 3, mean over heads" in texts(at)
    # the overview holds every thumbnail; with a short text they are the maps themselves
    over = _figure(at, "attention_overview_a")
    assert len(next(t for t in over["data"] if t.get("name") == "pick")["x"]) == 30 * 9
    # one token: its row in every layer
    at.selectbox(key="attention_token_a").set_value(5).run()
    token_fig = _figure(at, "attention_token_fig_a")
    np.testing.assert_allclose(_z(token_fig["data"][0]), direct[:, :, 5, :6].mean(1).numpy(), atol=1e-6)
    html = at.get("html")[0].proto.body
    assert html.count("<span") == t and "outline" in html
    assert "What **·5" in texts(at)
    # the colour ramp: square root by default (many stops), linear on request; the weights stay the same
    assert len(_figure(at, "attention_head_fig_a")["data"][0]["colorscale"]) == len(figs.colorscale("sqrt"))
    at.radio(key="attention_scale").set_value("linear").run()
    head_fig = _figure(at, "attention_head_fig_a")
    assert len(head_fig["data"][0]["colorscale"]) == len(figs.colorscale("linear")) < len(figs.colorscale("sqrt"))
    np.testing.assert_allclose(_head_z(at), direct[3].mean(0).numpy(), atol=1e-6)
    assert pin.FORWARD_PASSES == passes, "pickers re-render from the kept maps"
    assert at.query_params["scale"] in (["linear"], "linear")
    assert at.query_params["layer"] in (["3"], "3") and at.query_params["head"] in (["-1"], "-1")
    assert at.query_params["token"] in (["5"], "5")


def test_page_window_second_model_and_context_message(smollm2, minilm):
    at = app_test("views/attention.py", query={"text": LONG, "size": "16", "layer": "2", "head": "4"})
    assert not at.exception
    ids = attn.encode(smollm2, LONG)
    direct = direct_attentions(smollm2, ids)
    assert at.slider(key="attention_layer_a").value == 2 and at.selectbox(key="attention_head_a").value == 4
    at.slider(key="attention_start_a").set_value(20).run()
    z = _head_z(at)
    np.testing.assert_allclose(z, direct[2, 4, 20:36, 20:36].numpy(), atol=1e-6)
    fig = _figure(at, "attention_head_fig_a")
    earlier = _z(next(t for t in fig["data"] if t.get("name") == "earlier")).reshape(-1)
    np.testing.assert_allclose(earlier, direct[2, 4, 20:36, :20].sum(-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(z.sum(-1) + earlier, np.ones(16), atol=1e-5)
    assert "tokens 20–35 of" in texts(at)
    assert at.selectbox(key="attention_token_a").options  # the token picker follows the window
    assert all(20 <= int(o.split("·")[1].split()[0]) < 36 for o in at.selectbox(key="attention_token_a").options)

    # the encoder side by side: bidirectional, its own pickers, the upper triangle not empty
    at.selectbox(key="attention_model2").set_value("all-minilm-l6-v2").run()
    assert not at.exception
    shown = texts(at)
    assert "Encoder (bidirectional)" in shown and "Decoder (causal)" in shown
    e_ids = attn.encode(minilm, LONG)
    e_direct = direct_attentions(minilm, e_ids)
    layer_b, head_b = at.slider(key="attention_layer_b").value, at.selectbox(key="attention_head_b").value
    zb = _head_z(at, "b")
    start_b = at.slider(key="attention_start_b").value
    n = zb.shape[0]
    want = e_direct[layer_b] if head_b == -1 else e_direct[layer_b, head_b].unsqueeze(0)
    np.testing.assert_allclose(zb, want.mean(0)[start_b : start_b + n, start_b : start_b + n].numpy(), atol=1e-6)
    assert np.triu(zb, 1).sum() > 0
    assert at.query_params["model_b"] in (["all-minilm-l6-v2"], "all-minilm-l6-v2")

    # too long for MiniLM's 512 tokens: a clear message in its column, SmolLM2 still drawn, text kept
    long_text = "word " * 700
    at.text_area(key="attention_text").set_value(long_text).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("context is 512" in e and "Shorten it" in e for e in errors), errors
    assert at.text_area(key="attention_text").value == long_text
    assert _head_z(at).shape[0] == 16  # the decoder side still shows its window


def test_page_with_the_encoder_alone():
    at = app_test("views/attention.py", query={"model_a": "all-minilm-l6-v2", "text": SHORT})
    assert not at.exception
    shown = texts(at)
    assert "all-MiniLM-L6-v2 · encoder" in shown and "Encoder (bidirectional)" in shown
    assert "Grouped-query" not in shown
    assert "shape (6, 12," in shown


@pytest.mark.browser
def test_attention_page_in_chromium(app_url, page):
    page.goto(f"{app_url}/attention")
    page.get_by_role("heading", name="Attention").first.wait_for()
    page.get_by_text("Click one to open it below").wait_for()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 2")
    wait_idle(page)
    assert "Grouped-query attention" in page.content()
    # click a thumbnail of the overview (layer 20, head 2): the large view opens on it
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    target = page.evaluate(
        """() => {
            const gd = document.querySelectorAll('.js-plotly-plot')[0];
            const pick = gd.data.find(t => t.name === 'pick');
            const i = pick.customdata.findIndex(c => c[0] === 20 && c[1] === 2);
            const L = gd._fullLayout, box = gd.getBoundingClientRect();
            return {x: box.left + L._size.l + L.xaxis.l2p(pick.x[i]), y: box.top + L._size.t + L.yaxis.l2p(pick.y[i])};
        }"""
    )
    page.mouse.move(target["x"], target["y"])
    page.wait_for_timeout(300)
    page.mouse.click(target["x"], target["y"])
    page.get_by_text("Layer 20, head 2").wait_for()
    wait_idle(page)
    page.wait_for_function("() => location.href.includes('layer=20') && location.href.includes('head=2')")
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 2")
    # a tall window shows the main flow at once: pickers, every map, the picked head large
    page.set_viewport_size({"width": 1400, "height": 2300})
    page.get_by_role("heading", name="Attention").first.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)
    screenshot(page, "attention")
