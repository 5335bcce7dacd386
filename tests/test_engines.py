"""The engine choice each catalogue entry carries: ids, capabilities, and why a page leaves an entry out."""

from __future__ import annotations

import os

import pytest

from playground import engines
from playground.errors import UnknownModelError
from playground.registry import get_model, list_models, quantization_of, variants


def test_bundled_gguf_entries_run_on_llama_cpp_next_to_their_transformers_copies():
    ids = [s.id for s in list_models(include_variants=True, include_cached_hub=False)]
    assert "smollm2-135m-instruct:gguf" in ids and "gemma-3-270m:gguf" in ids
    spec = get_model("smollm2-135m-instruct:gguf")
    assert (spec.engine, spec.precision, spec.base_id) == ("llama.cpp", "Q4_1", "smollm2-135m-instruct")
    assert spec.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and spec.label.endswith("llama.cpp Q4_1")
    assert get_model("gemma-3-270m:gguf").precision == "Q4_K_M"
    # the transformers precision variants are unchanged, and the GGUF entry is offered with them on request
    assert [v.id for v in variants("gemma-3-270m")] == ["gemma-3-270m", "gemma-3-270m:bf16", "gemma-3-270m:int8"]
    assert variants("gemma-3-270m", with_gguf=True)[-1].id == "gemma-3-270m:gguf"
    with pytest.raises(UnknownModelError, match="no bundled GGUF"):
        get_model("all-minilm-l6-v2:gguf")


def test_hub_gguf_and_endpoint_ids():
    spec = get_model("gguf:bartowski/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_K_M.gguf")
    assert (spec.engine, spec.source, spec.gguf_repo) == ("llama.cpp", "hub", "bartowski/SmolLM2-135M-Instruct-GGUF")
    assert spec.gguf_file == "SmolLM2-135M-Instruct-Q4_K_M.gguf" and spec.precision == "Q4_K_M"
    remote = get_model("endpoint:team-vllm/meta-llama/Llama-3.1-8B-Instruct")
    assert (remote.engine, remote.endpoint, remote.remote_model) == ("remote", "team-vllm", "meta-llama/Llama-3.1-8B-Instruct")
    assert get_model("endpoint:ollama/llama3.2:1b").remote_model == "llama3.2:1b"  # a tag's colon is the server's
    for bad in ("gguf:owner/name", "gguf:owner/name/weights.bin", "gguf:../x/y.gguf", "endpoint:no-model",
                "endpoint:/model", "endpoint:bad name/m"):
        with pytest.raises(UnknownModelError):
            get_model(bad)


@pytest.mark.parametrize("name, quant", [("model-Q4_K_M.gguf", "Q4_K_M"), ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
                                         ("x-IQ2_XS.gguf", "IQ2_XS"), ("tiny-f16.gguf", "F16"), ("plain.gguf", "GGUF")])
def test_quantization_read_from_the_file_name(name, quant):
    assert quantization_of(name) == quant


def test_capabilities_and_why_a_page_leaves_an_entry_out():
    hf, cpp, remote = (get_model(i) for i in ("smollm2-135m-instruct", "smollm2-135m-instruct:gguf", "endpoint:e/m"))
    assert hf.capabilities.can("attention") and hf.capabilities.can("full_distribution")
    assert cpp.capabilities.can("full_distribution") and not cpp.capabilities.can("attention")
    assert remote.capabilities.can("distribution") and not remote.capabilities.can("full_distribution")
    assert engines.why_not(hf, "attention") is None
    assert "llama.cpp and remote models do not expose attention" in engines.why_not(cpp, "attention")
    assert "top" in engines.why_not(remote, "full_distribution")
    encoder = get_model("all-minilm-l6-v2")
    assert encoder.capabilities.attention and not encoder.capabilities.generate


# --- the sidebar: a GGUF file from the Hub (against the local Hub) --------------------------------


def test_sidebar_lists_a_repos_gguf_files_refuses_the_huge_one_and_downloads_one(hub_server):
    from components import hub_gguf
    from playground.registry import gguf_id
    from tests.conftest import app_test, texts
    from tests.hub_server import GGUF_NAME, GGUF_REPO, HUGE_NAME, HUGE_REPO

    at = app_test()
    at.text_input(key=hub_gguf.REPO).input(HUGE_REPO)
    at.button(key=hub_gguf.LIST).click()
    at.run()
    table = at.sidebar.dataframe[0].value
    assert list(table["file"]) == [HUGE_NAME] and table["fits"][0].startswith("no: needs")
    at.button(key=hub_gguf.DOWNLOAD).click()
    at.run()
    assert "needs about" in texts(at) and "Pick a smaller quantization" in texts(at)  # refused before a byte
    assert at.selectbox(key="model_id").value == "smollm2-135m-instruct"  # nothing changed

    at.text_input(key=hub_gguf.REPO).input(GGUF_REPO)
    at.button(key=hub_gguf.LIST).click()
    at.run()
    assert GGUF_NAME in list(at.sidebar.dataframe[0].value["file"])
    at.selectbox(key=hub_gguf.PICK).select(GGUF_NAME)
    at.button(key=hub_gguf.DOWNLOAD).click()
    at.run()
    assert not at.exception
    assert at.selectbox(key="model_id").value == gguf_id(GGUF_REPO, GGUF_NAME)
    shown = texts(at)
    assert "llama.cpp" in shown and "Q4_1" in shown  # the facts: engine and quantization


# --- the pages ------------------------------------------------------------------------------------


def test_compare_page_measures_the_gguf_file_beside_the_precision_variants():
    from tests.conftest import app_test

    at = app_test("views/compare.py")
    at.selectbox(key="compare_variant_base").select("smollm2-135m-instruct")
    at.run()
    button = at.button(key="compare_variant_run")
    assert "GGUF file on llama.cpp" in button.label
    button.click()
    at.run(timeout=600)
    assert not at.exception
    table = next(df.value for df in at.main.dataframe if "mean KL vs fp32 (nats)" in df.value.columns)
    assert list(table["precision"]) == ["fp32", "bf16", "int8", "Q4_1 · llama.cpp"]
    gguf = table.iloc[3]
    assert 0 < gguf["mean KL vs fp32 (nats)"] < 0.05  # 4-bit weights, close to fp32 (measured 0.004)
    assert float(gguf["top-1 agreement"].rstrip("%")) >= 85


def test_next_token_page_on_a_llama_cpp_entry_shows_its_distribution_and_walks():
    import torch

    from components import cache
    from playground import stepping as stp
    from tests.conftest import app_test, texts

    gguf = cache.causal_lm("smollm2-135m-instruct:gguf")
    at = app_test("views/next_token.py", query={"model_a": "smollm2-135m-instruct:gguf"})
    assert not at.exception, at.exception
    assert at.selectbox(key="next_token_model").value == "smollm2-135m-instruct:gguf"
    prompt = stp.make_prompt(gguf.tokenizer, "Once upon a time, in a small village by the sea, there lived a",
                             use_chat_template=False)
    ref = torch.softmax(gguf.next_token_distribution(prompt.ids).logits, -1)  # llama.cpp's own logits
    metrics = {m.label: m.value for m in at.main.metric}
    assert metrics["Top token"] == f"{100 * float(ref.max()):.1f}%" and metrics["Tokens kept"] == "49,152"
    at.button(key="next_token_step_greedy").click().run()
    top = gguf.tokenizer.decode([int(ref.argmax())]).replace(" ", "␣")
    assert f"1 token walked · last: {top} (greedy)" in texts(at)
    # the sweep batches in PyTorch: on llama.cpp the page says so instead of failing
    assert "runs on llama.cpp" in texts(at)
    # the Attention page does not list llama.cpp entries, and says why
    att = app_test("views/attention.py", query={"model_a": "smollm2-135m-instruct:gguf"})
    assert "smollm2-135m-instruct:gguf" not in att.selectbox(key="attention_model").options
    assert "do not expose attention" in texts(att)


def test_compare_page_runs_a_transformers_and_a_llama_cpp_entry_side_by_side():
    from components import cache
    from playground.generate import GenerationSettings, generate
    from tests.conftest import app_test

    at = app_test("views/compare.py", query={"models": "smollm2-135m-instruct,smollm2-135m-instruct:gguf",
                                             "prompt": "Name a colour.", "max": "12"})
    assert at.multiselect(key="compare_models").value == ["smollm2-135m-instruct", "smollm2-135m-instruct:gguf"]
    at.button(key="compare_run").click()
    at.run(timeout=300)
    assert not at.exception, at.exception
    result = at.session_state["compare_result"]
    hf, cpp = result.runs
    assert not hf.error and not cpp.error
    assert cpp.label.endswith("llama.cpp Q4_1") and cpp.precision == "Q4_1"
    alone = generate(cache.causal_lm("smollm2-135m-instruct:gguf"), "Name a colour.", GenerationSettings(max_new_tokens=12))
    assert cpp.text == alone.text and cpp.metrics.new_tokens == alone.new_tokens  # the engine's own greedy answer
    assert hf.metrics.tokens_per_second > 0 and cpp.metrics.tokens_per_second > 0


# --- an endpoint: llama.cpp's own OpenAI-compatible server on loopback ------------------------------

ENDPOINT_KEY = "sk-engines-test-4b1d2c9e7a"


@pytest.fixture(scope="module")
def llama_server():
    from tests.openai_server import LlamaServer

    server = LlamaServer(api_key=ENDPOINT_KEY).start()
    try:
        yield server
    finally:
        server.stop()


def _add_endpoint_in_the_sidebar(at, url: str):
    from components import endpoints as ui

    at.text_input(key=ui.NAME).input("lab")
    at.text_input(key=ui.URL).input(url)
    at.button(key=ui.ADD).click()
    at.run()
    at.text_input(key="sidebar_endpoint_key_lab").input(ENDPOINT_KEY)
    at.button(key="sidebar_endpoint_list_lab").click()
    at.run()
    return at


def test_sidebar_adds_an_endpoint_lists_its_models_and_keeps_no_key(llama_server):
    from playground import endpoints
    from playground.paths import data_root
    from tests.conftest import app_test, texts

    endpoints.remove_endpoint("lab")
    at = _add_endpoint_in_the_sidebar(app_test(), llama_server.url)
    assert not at.exception, at.exception
    assert at.selectbox(key="model_id").value == "endpoint:lab/smollm2"
    shown = texts(at)
    assert "remote" in shown and "serves 1 model(s): smollm2" in shown
    assert ENDPOINT_KEY not in shown and ENDPOINT_KEY not in str(dict(at.query_params))
    for path in data_root().rglob("*"):  # the key is on no file the app wrote
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert ENDPOINT_KEY.encode() not in path.read_bytes(), path
    assert endpoints.get_endpoint("lab").url == llama_server.url  # kept for the next start
    # a wrong key is a clear message that does not repeat it
    at.text_input(key="sidebar_endpoint_key_lab").input("sk-wrong-123456789")
    at.button(key="sidebar_endpoint_list_lab").click()
    at.run()
    assert any("key" in e.value.lower() for e in at.sidebar.error) and "sk-wrong-123456789" not in texts(at)


def test_compare_runs_transformers_llama_cpp_and_an_endpoint_side_by_side(llama_server):
    from components import cache
    from tests.conftest import app_test

    at = _add_endpoint_in_the_sidebar(app_test(), llama_server.url)
    at.switch_page("views/compare.py")
    at.run()
    models = ["smollm2-135m-instruct", "smollm2-135m-instruct:gguf", "endpoint:lab/smollm2"]
    at.multiselect(key="compare_models").set_value(models)
    at.text_area(key="compare_prompt").input("Name a colour.")
    at.number_input(key="compare_all_max_new_tokens").set_value(12)
    at.run()
    at.button(key="compare_run").click()
    at.run(timeout=300)
    assert not at.exception, at.exception
    runs = at.session_state["compare_result"].runs
    assert [r.model_id for r in runs] == models and not any(r.error for r in runs)
    # The server's greedy answer is not compared with a second request: llama.cpp's server reuses its
    # prompt cache across requests, and its logits depend slightly on how tokens were batched.
    hf, cpp, server = runs
    assert server.text.strip() and server.metrics.new_tokens > 0 and server.metrics.finish_reason in (
        "max tokens", "end of turn", "end of sequence")
    assert server.metrics.tokens_per_second > 0 and server.metrics.memory_bytes == 0  # no weights here
    assert server.label == "smollm2 · lab"
    assert cache.causal_lm("smollm2-135m-instruct:gguf").spec.engine == "llama.cpp"


def test_next_token_page_shows_a_servers_top_tokens_with_the_rest_as_other(llama_server):
    import math

    from tests.conftest import app_test, texts

    at = _add_endpoint_in_the_sidebar(app_test(), llama_server.url)
    at.switch_page("views/next_token.py")
    at.run()
    assert at.selectbox(key="next_token_server_model").value == "endpoint:lab/smollm2"
    assert "endpoint:lab/smollm2" not in at.selectbox(key="next_token_model").options  # no full distribution
    at.button(key="next_token_server_run").click()
    at.run()
    assert not at.exception, at.exception
    _, dist = at.session_state["next_token_server_result"]
    assert len(dist.choices) >= 5 and 0 <= dist.other < 1
    assert math.isclose(sum(math.exp(c.logprob) for c in dist.choices) + dist.other, 1.0, abs_tol=1e-9)
    assert "the server does not send the rest" in texts(at)


@pytest.mark.browser
def test_three_engines_side_by_side_and_next_token_in_chromium(app_url, page, llama_server):
    """A person's flow in a real browser: an endpoint added before (its URL kept, its key not), a link
    to Compare with a transformers, a llama.cpp and an endpoint entry, the key typed in the sidebar,
    Compare pressed; then Next token on the llama.cpp entry and the server's top tokens."""
    from playwright.sync_api import expect

    from playground import endpoints
    from tests.conftest import screenshot, wait_idle

    endpoints.add_endpoint("lab", llama_server.url, replace_existing=True)
    models = "smollm2-135m-instruct,smollm2-135m-instruct:gguf,endpoint:lab/smollm2"
    page.set_viewport_size({"width": 1500, "height": 2300})
    page.goto(f"{app_url}/compare?models={models}&max=16&prompt=Name%20three%20colours.")
    page.get_by_role("heading", name="Compare models", exact=True).wait_for()
    wait_idle(page)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("A model server (OpenAI API)").click()
    key = sidebar.locator(".st-key-sidebar_endpoint_key_lab input")
    key.fill(ENDPOINT_KEY)
    key.press("Enter")
    wait_idle(page)
    sidebar.locator(".st-key-sidebar_endpoint_list_lab button").click()  # what it serves joins the model lists
    wait_idle(page)
    sidebar.get_by_text("serves 1 model(s)").wait_for()
    page.locator(".st-key-compare_run button").click()
    main = page.locator('[data-testid="stMain"]')
    try:
        main.get_by_text("Tokens generated:").nth(2).wait_for(timeout=int(os.environ.get("PLAYGROUND_TEST_WAIT", 240_000)))
    except Exception:
        screenshot(page, "compare-three-engines-failed")
        raise
    wait_idle(page, timeout=240_000)
    main.locator(".js-plotly-plot").first.wait_for()
    expect(main.get_by_text("llama.cpp Q4_1").first).to_be_visible()
    screenshot(page, "compare-three-engines")
    assert main.get_by_text("Tokens generated:").count() == 3
    assert main.locator('[data-testid="stException"]').count() == 0
    assert main.get_by_text("smollm2 · lab").count() >= 1
    # the key is in the password box the person typed it into, and nowhere else on the page or in the link
    assert ENDPOINT_KEY not in page.locator("body").inner_text() and ENDPOINT_KEY not in page.url
    assert page.locator(f'input[value="{ENDPOINT_KEY}"]').count() <= 1

    # Next token, in the same session (the key stays typed): the llama.cpp entry's distribution and walk
    page.get_by_role("link", name="Next token").click()
    page.get_by_role("heading", name="Next token", exact=True).wait_for()
    wait_idle(page)
    picker = main.locator(".st-key-next_token_model")
    picker.click()
    page.get_by_role("option", name="llama.cpp Q4_1").first.click()
    wait_idle(page)
    page.locator(".st-key-next_token_step_greedy button").first.click()
    wait_idle(page)
    main.get_by_text("1 token walked").first.wait_for()
    page.locator(".st-key-next_token_server_run button").first.click()
    wait_idle(page)
    main.get_by_text("the server does not send the rest").wait_for()
    screenshot(page, "next-token-llama-cpp-and-server")
    assert main.locator('[data-testid="stException"]').count() == 0


# --- Prompt A/B and RAG on the other engines --------------------------------------------------------


def test_prompt_ab_and_rag_answers_come_from_llama_cpp_and_an_endpoint(llama_server, tmp_path):
    """The A/B run loop and the RAG answer take any entry: each cell is that engine's own answer."""
    from playground import endpoints
    from playground import experiments as ex
    from playground.engines import remote
    from playground.generate import GenerationSettings, generate
    from playground.loading import load_causal_lm
    from playground.prompts import PromptVariant
    from playground.rag import pipeline
    from playground.rag.chunking import Chunk
    from playground.rag.retrieval import RetrievedChunk

    endpoints.add_endpoint("lab", llama_server.url, replace_existing=True)
    cpp = load_causal_lm("smollm2-135m-instruct:gguf")
    served = remote.load("endpoint:lab/smollm2", api_key=ENDPOINT_KEY)
    models = {cpp.spec.id: cpp, served.spec.id: served}
    settings = ex.RunSettings(tuple(models), GenerationSettings(max_new_tokens=8))
    exp = ex.Experiment("engines", (PromptVariant("A", "Answer in one word: {question}"),
                                    PromptVariant("B", "{question} Reply with a short sentence.")),
                        (ex.InputRow({"question": "What is the capital of France?"}, "Paris"),), settings)
    report = ex.run(exp, ex.ExperimentStore(tmp_path / "e.sqlite3"), lambda m: models[m])
    assert (report.generated, report.failed) == (4, 0)
    cell = exp.cells[(0, "A", cpp.spec.id)]
    assert cell.output == generate(cpp, "Answer in one word: What is the capital of France?",
                                   settings.generation).text  # the llama.cpp engine's own greedy answer
    assert exp.cells[(0, "A", served.spec.id)].output.strip()  # the server's answer

    source = "The Eiffel Tower is in Paris. It was finished in 1889."
    hit = RetrievedChunk("c1", Chunk("tower.txt", 0, 0, len(source), source), 1.0, 1)
    for lm in (cpp, served):
        plan = pipeline.build_prompt(lm, pipeline.DEFAULT_TEMPLATE, "When was the Eiffel Tower finished?", [hit],
                                     GenerationSettings(max_new_tokens=16))
        ans = pipeline.answer(lm, plan)
        assert ans.text.strip() and ans.result.engine == lm.engine
        assert plan.prompt_tokens > 0 and plan.used == (hit,)
