"""The engine choice each catalogue entry carries: ids, capabilities, and why a page leaves an entry out."""

from __future__ import annotations

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
