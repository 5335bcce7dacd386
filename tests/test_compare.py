"""Compare models: side-by-side streaming on the bundled models, precision variants, perplexity,
export, the Hub browser against the local Hub, the page (AppTest) and the page in Chromium."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch

from playground import compare as core
from playground import hub
from playground.errors import ContextLengthError, InputError
from playground.generate import GenerationSettings, format_prompt
from tests.conftest import app_test, screenshot, texts, wait_idle

PROMPT = "Write a haiku about the sea."
FINISH = {"end of turn", "end of sequence", "max tokens", "stop sequence"}


@pytest.fixture(scope="module")
def side_by_side(smollm2, gemma):
    """SmolLM2 (chat template) and Gemma (raw) on one prompt, all at once; every Update kept."""
    settings = GenerationSettings(max_new_tokens=16)
    sbs = core.SideBySide([smollm2, gemma], PROMPT, [core.Entry(smollm2.id, settings), core.Entry(gemma.id, settings)])
    updates = list(sbs)
    return sbs, updates


def test_all_text_arrives_and_streamed_text_equals_final(side_by_side, smollm2, gemma):
    sbs, updates = side_by_side
    c = sbs.result
    assert c is not None and c.concurrent and len(c.runs) == 2
    for run, lm in zip(c.runs, (smollm2, gemma)):
        streamed = "".join(u.text for u in updates if u.column == run.column)
        assert run.error is None
        assert streamed == run.text and run.text.strip()
        finals = [u for u in updates if u.column == run.column and u.run is not None]
        assert len(finals) == 1 and finals[0].so_far == run.text and finals[0].run == run
        # the text is what the model's own tokenizer makes of the ids it generated
        assert lm.tokenizer.decode(list(run.token_ids), skip_special_tokens=True) == run.text


def test_columns_fill_together(side_by_side):
    _, updates = side_by_side
    first_done = next(i for i, u in enumerate(updates) if u.run is not None)
    # before either model finished, both had already streamed text
    assert {u.column for u in updates[:first_done] if u.text} == {0, 1}


def test_metrics_are_present_and_plausible(side_by_side, smollm2, gemma):
    sbs, _ = side_by_side
    for run, lm in zip(sbs.result.runs, (smollm2, gemma)):
        m = run.metrics
        assert m.new_tokens == len(run.token_ids) and 1 <= m.new_tokens <= 16
        assert m.finish_reason in FINISH
        if m.finish_reason == "max tokens":
            assert m.new_tokens == 16
        # re-encoding the answer with the model's tokenizer gives about as many tokens (an end token is not text)
        assert abs(len(lm.tokenizer(run.text, add_special_tokens=False).input_ids) - m.new_tokens) <= 2
        assert 0 < m.time_to_first_token <= m.total_seconds
        assert m.tokens_per_second == pytest.approx((m.new_tokens - 1) / (m.total_seconds - m.time_to_first_token))
        assert 0.1 < m.tokens_per_second < 1000
        assert m.memory_bytes == lm.memory_bytes and m.memory_bytes >= 4 * sum(p.numel() for p in lm.model.parameters())
        assert m.load_seconds == lm.load_seconds > 0
        assert m.prompt_tokens == len(lm.tokenizer(run.prompt, add_special_tokens=not run.templated).input_ids)
    chat, base = sbs.result.runs
    assert chat.templated and "<|im_start|>user" in chat.prompt and chat.prompt == format_prompt(smollm2.tokenizer, PROMPT)
    assert not base.templated and base.prompt == PROMPT


def test_one_at_a_time_per_model_settings_and_together_changes_no_answer(side_by_side, smollm2):
    # the same model twice: one stops at a comma, the other runs to its token limit; one after the other
    entries = [core.Entry(smollm2.id, GenerationSettings(max_new_tokens=12, stop=(",",))),
               core.Entry(smollm2.id, GenerationSettings(max_new_tokens=16))]
    sbs = core.SideBySide([smollm2, smollm2], PROMPT, entries, concurrent=False)
    columns = [u.column for u in sbs]
    assert columns == sorted(columns)  # column 0 entirely before column 1
    stopped, alone = sbs.result.runs
    assert stopped.metrics.finish_reason == "stop sequence" and stopped.text.rstrip().endswith(",")
    assert alone.metrics.finish_reason == "max tokens" and alone.metrics.new_tokens == 16
    assert not sbs.result.concurrent
    # generating at the same time as Gemma changed nothing in SmolLM2's greedy answer
    assert side_by_side[0].result.runs[0].token_ids == alone.token_ids


def test_a_seed_gives_the_same_sampled_answers_together_or_one_at_a_time(smollm2, gemma):
    """Sampled, seeded: the side-by-side answers do not depend on whether the models ran at once."""
    entries = [core.Entry(smollm2.id, GenerationSettings(max_new_tokens=14, temperature=1.0, seed=21)),
               core.Entry(gemma.id, GenerationSettings(max_new_tokens=14, temperature=1.0, seed=21))]
    together = core.compare([smollm2, gemma], PROMPT, entries, concurrent=True)
    apart = core.compare([smollm2, gemma], PROMPT, entries, concurrent=False)
    assert [r.token_ids for r in together.runs] == [r.token_ids for r in apart.runs]
    other = core.compare([smollm2, gemma], PROMPT, [core.Entry(e.model_id, GenerationSettings(
        max_new_tokens=14, temperature=1.0, seed=22)) for e in entries], concurrent=True)
    assert [r.token_ids for r in other.runs] != [r.token_ids for r in together.runs]


def test_bad_setups_are_refused_before_anything_runs(smollm2, gemma):
    with pytest.raises(InputError, match="1 model"):
        core.SideBySide([smollm2], PROMPT, [core.Entry(smollm2.id)])
    long = "word " * 7000
    with pytest.raises(ContextLengthError, match="context is 8,192"):
        core.SideBySide([smollm2, gemma], long, [core.Entry(smollm2.id, GenerationSettings(max_new_tokens=2048)),
                                                 core.Entry(gemma.id)])
    with pytest.raises(InputError, match="empty"):
        core.SideBySide([smollm2, gemma], "  ", [core.Entry(smollm2.id), core.Entry(gemma.id)])


def test_stop_sequences_parse():
    assert core.parse_stop("\\n\\n, User: ,") == ("\n\n", "User:")
    assert core.parse_stop(core.stop_text(("\n", "a b"))) == ("\n", "a b")
    assert core.parse_stop("") == ()
    with pytest.raises(InputError, match="5 stop sequences"):
        core.parse_stop("a,b,c,d,e")


def test_export_json_and_csv(side_by_side):
    sbs, _ = side_by_side
    c = sbs.result
    data = json.loads(core.to_json(c))
    assert data["prompt"] == PROMPT and [r["model_id"] for r in data["runs"]] == [r.model_id for r in c.runs]
    assert data["runs"][0]["text"] == c.runs[0].text and data["runs"][0]["token_ids"] == list(c.runs[0].token_ids)
    assert data["runs"][1]["metrics"]["new_tokens"] == c.runs[1].metrics.new_tokens
    rows = list(csv.DictReader(io.StringIO(core.to_csv(c))))
    assert [r["model_id"] for r in rows] == [r.model_id for r in c.runs]
    assert rows[1]["text"] == c.runs[1].text  # newlines survive the CSV round trip
    assert int(rows[0]["new_tokens"]) == c.runs[0].metrics.new_tokens and rows[0]["finish_reason"] in FINISH


# --- precision variants ----------------------------------------------------------------------


def test_kl_against_a_hand_checked_example():
    # p = (1/2, 1/2), q = (1/4, 3/4): KL(p||q) = 1/2 ln 2 + 1/2 ln(2/3) = 0.143841 nats (by hand)
    p = torch.log(torch.tensor([[0.5, 0.5], [0.2, 0.8]])) + 3.0  # logits: any shift gives the same softmax
    q = torch.log(torch.tensor([[0.25, 0.75], [0.2, 0.8]])) - 1.0
    kl = core.kl_divergence(p, q)
    assert kl.shape == (2,)
    assert kl[0].item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-6)
    assert kl[0].item() == pytest.approx(0.143841, abs=1e-6)
    assert kl[1].item() == pytest.approx(0.0, abs=1e-7)
    # not symmetric: KL(q||p) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812
    assert core.kl_divergence(q, p)[0].item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-6)


@pytest.fixture(scope="module")
def variants():
    from playground.loading import load_causal_lm

    return load_causal_lm("smollm2-135m-instruct:bf16"), load_causal_lm("smollm2-135m-instruct:int8")


def test_variants_structure(smollm2, variants):
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    bf16, int8 = variants
    assert all(p.dtype == torch.bfloat16 for p in bf16.model.parameters())
    assert core.weight_dtype(bf16) == ("bfloat16", 0) and core.weight_dtype(smollm2) == ("float32", 0)
    linears = sum(isinstance(m, torch.nn.Linear) for m in smollm2.model.modules())
    assert linears == 30 * 7 + 1  # q, k, v, o, gate, up, down per layer, and the LM head
    assert sum(isinstance(m, QLinear) for m in int8.model.modules()) == linears
    assert not any(isinstance(m, torch.nn.Linear) for m in int8.model.modules())
    assert core.weight_dtype(int8) == ("qint8", linears)
    # memory: bf16 is half of fp32; int8 is below fp32 (its embedding stays fp32)
    assert bf16.memory_bytes * 2 == pytest.approx(smollm2.memory_bytes, rel=0.01)
    assert int8.memory_bytes < bf16.memory_bytes < smollm2.memory_bytes


def test_divergence_and_variant_report(smollm2, variants):
    from playground.passes import forward

    bf16, int8 = variants
    text = "The Eiffel Tower is a wrought-iron lattice tower in Paris."
    d = core.divergence(smollm2, bf16, text)
    # the per-position KL is the hand-checked formula applied to the two models' logits
    ids = torch.tensor(d.token_ids)
    ref, got = forward(smollm2, ids).logits, forward(bf16, ids).logits  # (T, V) each
    assert torch.allclose(torch.tensor(d.kl), core.kl_divergence(ref, got))
    assert d.top1_match == tuple((ref.argmax(-1) == got.argmax(-1)).tolist())
    assert len(d.kl) == len(d.token_ids) == len(smollm2.tokenizer(text).input_ids)
    assert all(k >= -1e-6 for k in d.kl) and 0 < d.kl_mean < 1 and d.top1_agreement > 0.5

    seen: list[float] = []
    report = core.variant_report([smollm2, bf16, int8], text, speed_tokens=3, progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert [r.precision for r in report.rows] == ["fp32", "bf16", "int8"]
    fp32 = report.row("fp32")
    assert fp32.kl_mean == 0.0 and fp32.top1_agreement == 1.0  # fp32 against itself
    assert report.row("bf16").kl == pytest.approx(d.kl, abs=1e-6)
    assert report.row("int8").kl_mean > 0 and report.row("int8").quantized_linears == 211
    assert {r.disk_bytes for r in report.rows} == {fp32.disk_bytes}  # all made from the one fp32 file
    assert [r.memory_bytes for r in report.rows] == [smollm2.memory_bytes, bf16.memory_bytes, int8.memory_bytes]
    assert all(r.tokens_per_second and r.tokens_per_second > 0 for r in report.rows)
    assert "".join(report.pieces) == text
    with pytest.raises(InputError, match="no fp32"):
        core.variant_report([bf16, int8], text, speed_prompt=None)


# --- perplexity ----------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["smollm2", "gemma"])
def test_perplexity_is_exp_mean_nll_from_the_logits(fixture, request):
    lm = request.getfixturevalue(fixture)
    text = core.SAMPLES["Encyclopedia prose"]
    p = core.perplexity(lm, text)
    ids = lm.tokenizer(text, return_tensors="pt").input_ids  # (1, T), with BOS where the tokenizer adds one
    with torch.no_grad():
        logits = lm.model(ids).logits[0].float()  # (T, V)
    nll = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:])  # mean -ln p(token | before)
    assert p.perplexity == pytest.approx(math.exp(nll.item()), rel=1e-4)
    assert p.token_ids == tuple(ids[0].tolist())
    assert p.surprisal[0] is None and len(p.surprisal) == ids.shape[1] and p.predicted == ids.shape[1] - 1
    assert p.nll_mean == pytest.approx(sum(p.surprisal[1:]) / p.predicted)
    assert "".join(p.pieces) == text  # the coloured spans give back the text
    if fixture == "smollm2":
        shuffled = core.perplexity(lm, core.SAMPLES["Shuffled words"])
        assert shuffled.perplexity > 5 * p.perplexity  # word salad surprises the model far more
    with pytest.raises(InputError, match="empty"):
        core.perplexity(lm, " ")


# --- the Hub -------------------------------------------------------------------------------


def test_hub_search_info_gated_and_download_with_progress(hub_server, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # a fresh cache: the download really happens here
    assert hub.status().reachable
    by_likes = hub.search("llama", sort="likes")
    assert [m.id for m in by_likes][:1] == ["tiny-org/gated-llama"]
    assert [m.id for m in hub.search("llama", sort="downloads")][0] == "tiny-org/huge-llama"
    found = {m.id: m for m in by_likes}
    tiny = found["tiny-org/tiny-llama"]
    assert tiny.parameters and tiny.weights_bytes == tiny.parameters * 4  # F32 in the safetensors metadata
    assert found["tiny-org/gated-llama"].gated and not tiny.gated and tiny.license == "apache-2.0"
    assert found["tiny-org/huge-llama"].parameters == 70_000_000_000
    info = hub.model_info("tiny-org/tiny-llama")
    assert info.weights_bytes == info.safetensors_bytes > 1_000_000
    assert hub.cached_hub_models() == []
    seen: list[tuple[float, str]] = []
    folder = hub.download("tiny-org/tiny-llama", lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert any("MiB" in m and "of" in m for _, m in seen[1:])  # bytes as they arrive, not only whole files
    assert (folder / "model.safetensors").is_file()
    assert hub.cached_hub_models() == ["tiny-org/tiny-llama"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = hub.status()
    assert not offline.reachable and offline.offline and "HF_HUB_OFFLINE" in offline.message


# --- the page ------------------------------------------------------------------------------


def test_page_first_load_compare_and_perplexity(smollm2, monkeypatch):
    from components.answer_tokens import answer_html

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no Hub: the page says so and lists what is cached
    at = app_test("views/compare.py", query={"max": "6"})
    assert not at.exception
    shown = texts(at)
    assert "Compare models" in shown and "How to read this" in [e.label for e in at.expander]
    assert at.multiselect(key="compare_models").value == ["smollm2-135m-instruct", "gemma-3-270m"]
    assert at.number_input(key="compare_all_max_new_tokens").value == 6  # from the URL
    assert any("No Hub access" in w.value and "HF_HUB_OFFLINE" in w.value for w in at.warning)
    assert "Already downloaded" in shown
    facts = at.dataframe[0].value  # what is compared, before anything is loaded
    assert list(facts["chat template"]) == ["yes", "no"]

    at.text_area(key="compare_prompt").set_value("Name a colour.")
    at.button(key="compare_run").click().run(timeout=240)
    assert not at.exception, at.exception
    shown = texts(at)
    result = at.session_state["compare_result"]
    assert [r.model_id for r in result.runs] == ["smollm2-135m-instruct", "gemma-3-270m"]
    for run in result.runs:
        assert run.text.strip() and len(run.logprobs) == run.metrics.new_tokens
        assert answer_html(run.logprobs, run.token_ids, run.origin) in shown  # the answer, token by token
        assert f"Tokens generated:** {run.metrics.new_tokens} of 6" in shown
        assert f"Stopped:** {run.metrics.finish_reason}" in shown
    assert "chat template · greedy · up to 6 tokens" in shown and "raw prompt (no chat template)" in shown
    assert len(at.get("plotly_chart")) >= 1
    assert len(at.get("download_button")) == 2  # JSON and CSV of the comparison
    assert at.query_params["prompt"] in (["Name a colour."], "Name a colour.")
    assert at.query_params["models"] in (["smollm2-135m-instruct,gemma-3-270m"], "smollm2-135m-instruct,gemma-3-270m")

    at.button(key="compare_ppl_run").click().run(timeout=240)
    assert not at.exception
    expected = core.perplexity(smollm2, core.SAMPLES["Encyclopedia prose"]).perplexity
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["SmolLM2 135M Instruct"] == f"{expected:,.2f}"
    assert "Gemma 3 270M (base)" in metrics
    assert any("rgba(220,38,38" in h.proto.body for h in at.get("html"))  # the surprisal colouring


def test_page_setup_comes_from_the_url_and_bad_values_are_tamed():
    at = app_test("views/compare.py", query={
        "models": "gemma-3-270m,bogus,smollm2-135m-instruct:int8", "per_model": "true", "temp1": "0.7", "seed1": "5",
        "max": "0", "temp": "9", "stop": "\\n\\n, User:", "sample": "nope",
    })
    assert not at.exception
    assert at.multiselect(key="compare_models").value == ["gemma-3-270m", "smollm2-135m-instruct:int8"]
    # per-model settings: column 1 from its own parameters, column 0 from the shared ones, brought into bounds
    assert at.slider(key="compare_1_temperature").value == 0.7 and at.number_input(key="compare_1_seed").value == 5
    assert at.slider(key="compare_0_temperature").value == 2.0 and at.number_input(key="compare_0_max_new_tokens").value == 1
    assert at.text_input(key="compare_0_stop").value == "\\n\\n, User:"
    assert at.selectbox(key="compare_ppl_sample").value == next(iter(core.SAMPLES))
    at.slider(key="compare_1_temperature").set_value(1.2).run()
    assert at.query_params["temp1"] in (["1.2"], "1.2") and at.query_params["models"] in (
        ["gemma-3-270m,smollm2-135m-instruct:int8"], "gemma-3-270m,smollm2-135m-instruct:int8")


def test_page_hub_browser_downloads_and_adds_a_model(hub_server, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    at = app_test("views/compare.py")
    assert not at.exception
    assert "None yet" in texts(at)
    at.text_input(key="compare_hub_query").set_value("llama")
    at.radio(key="compare_hub_sort").set_value("likes")
    at.button(key="compare_hub_search").click().run()
    shown = texts(at)
    assert shown.index("tiny-org/gated-llama") < shown.index("tiny-org/tiny-llama")  # most liked first
    assert "gated: needs HF_TOKEN" in shown and "70.0B parameters" in shown
    order = [m.id for m in at.session_state["compare_hub_found"]]
    at.button(key=f"compare_hub_dl_{order.index('tiny-org/gated-llama')}").click().run()
    assert any("gated" in e.value and "HF_TOKEN" in e.value for e in at.error)
    at.button(key=f"compare_hub_dl_{order.index('tiny-org/tiny-llama')}").click().run()
    assert not at.exception
    assert any("tiny-org/tiny-llama is downloaded" in s.value for s in at.success)
    at.button(key="compare_hub_use_tiny-org/tiny-llama").click().run()
    assert "tiny-org/tiny-llama" in at.multiselect(key="compare_models").value


@pytest.mark.browser
def test_compare_page_streams_in_chromium(app_url, page):
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 1400, "height": 2300})  # Streamlit scrolls inside its main block
    page.goto(f"{app_url}/compare?max=16")
    page.get_by_role("heading", name="Compare models", exact=True).wait_for()
    wait_idle(page)
    page.locator(".st-key-compare_run button").click()
    main = page.locator('[data-testid="stMain"]')
    # both columns finish with their numbers under them
    main.get_by_text("Tokens generated:").nth(1).wait_for(timeout=180_000)
    wait_idle(page, timeout=180_000)
    main.locator(".js-plotly-plot").first.wait_for()
    # widgets settled: right after a run on a server that served other sessions, Streamlit can redraw a
    # text box empty for a moment before its value arrives
    expect(main.locator("textarea").first).to_have_value("Write a haiku about the sea.", timeout=60_000)
    screenshot(page, "compare")
    assert main.get_by_text("Tokens generated:").count() == 2
    assert main.get_by_text("raw prompt (no chat template)").count() == 1
    assert main.get_by_text("Waiting for the first token").count() == 0
    assert "models=smollm2-135m-instruct%2Cgemma-3-270m" in page.url or "models=smollm2-135m-instruct,gemma-3-270m" in page.url
