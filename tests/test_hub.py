"""The real huggingface_hub code path against a local Hub (tests/hub_server.py) via HF_ENDPOINT."""

from __future__ import annotations

import pytest
import torch

from playground import hub, loading
from playground.errors import (
    CapabilityError,
    GatedModelError,
    HubUnavailableError,
    ModelNotCachedError,
    ModelTooLargeError,
    NoSafetensorsError,
    RemoteCodeError,
    UnknownModelError,
)
from playground.generate import GenerationSettings, generate
from playground.registry import get_model, list_models
from tests.hub_server import GOOD_TOKEN


def test_search_sorted_by_downloads_and_likes(hub_server):
    by_downloads = [m.id for m in hub.search("llama", sort="downloads")]
    assert by_downloads == ["tiny-org/huge-llama", "tiny-org/tiny-llama", "tiny-org/gated-llama"]
    by_likes = [m.id for m in hub.search("llama", sort="likes")]
    assert by_likes[0] == "tiny-org/gated-llama"
    # only text-generation models are listed
    assert "tiny-org/tiny-bert" not in [m.id for m in hub.search("tiny")]


def test_info_reads_size_params_license_and_gated(hub_server):
    info = hub.model_info("tiny-org/tiny-llama")
    assert info.has_safetensors and info.safetensors_bytes > 1_000_000
    assert info.parameters is not None and 1_000_000 < info.parameters < 5_000_000
    assert info.license == "apache-2.0" and not info.gated
    assert hub.model_info("tiny-org/gated-llama").gated


def test_download_with_progress_then_generate_greedy_equals_model_generate(hub_server, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # a cache of its own: other tests may have downloaded it
    seen: list[float] = []
    folder = loading.prepare("tiny-org/tiny-llama", lambda f, m: seen.append(f))
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    # nothing pickled was fetched, ever
    assert not any(p.endswith(".bin") for _, p in hub_server.requests)
    lm = loading.load_causal_lm("tiny-org/tiny-llama")
    assert lm.num_layers == 2 and lm.spec.source == "hub"
    result = generate(lm, "Hello", GenerationSettings(max_new_tokens=8), use_chat_template=False)
    ids = lm.tokenizer("Hello", return_tensors="pt").input_ids
    ref = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    assert list(result.token_ids) == ref[0, ids.shape[1]:].tolist()
    # the downloaded model now shows up in the catalogue, from the cache alone
    assert "tiny-org/tiny-llama" in [m.id for m in list_models()]
    facts = loading.model_facts("tiny-org/tiny-llama")
    assert facts.layers == 2 and facts.vocab_size == 49152


def test_a_hub_tokenizer_is_fetched_without_the_weights(hub_server, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    before = len(hub_server.requests)
    tok = loading.load_tokenizer("tiny-org/tiny-llama")
    fetched = [p for _, p in hub_server.requests[before:] if "/resolve/" in p]
    assert any(p.endswith("tokenizer.json") for p in fetched) and not any(".safetensors" in p for p in fetched)
    assert tok("Hello world").input_ids and tok.vocab_size == 49152
    # a tokenizer alone is not a model: not listed, not used for loading, and offline it is "not cached"
    assert hub.local_snapshot("tiny-org/tiny-llama") is None
    assert hub.local_snapshot("tiny-org/tiny-llama", weights=False) is not None
    assert "tiny-org/tiny-llama" not in [m.id for m in list_models()]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert loading.load_tokenizer("tiny-org/tiny-llama")("Hello world").input_ids == tok("Hello world").input_ids
    with pytest.raises(ModelNotCachedError, match="not in the local cache"):
        loading.load_causal_lm("tiny-org/tiny-llama")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    # online again, loading the model fetches the weights into the same snapshot
    lm = loading.load_causal_lm("tiny-org/tiny-llama")
    assert lm.num_layers == 2 and any(".safetensors" in p for _, p in hub_server.requests[before:])


def test_offline_uses_the_cache_and_says_when_not_cached(hub_server, monkeypatch):
    loading.prepare("tiny-org/tiny-llama")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert loading.prepare("tiny-org/tiny-llama").is_dir()
    with pytest.raises(ModelNotCachedError, match="not in the local cache"):
        loading.prepare("tiny-org/never-downloaded")
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        hub.search("llama")
    # the Hub down (not just offline mode): a cached model still loads
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert loading.load_causal_lm("tiny-org/tiny-llama").num_layers == 2


def test_gated_needs_a_token(hub_server, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(GatedModelError, match="HF_TOKEN"):
        loading.prepare("tiny-org/gated-llama")
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
    assert (loading.prepare("tiny-org/gated-llama") / "model.safetensors").is_file()


def test_unknown_repo(hub_server):
    with pytest.raises(UnknownModelError, match="not found on the Hub"):
        loading.prepare("tiny-org/no-such-model")


def test_too_large_is_refused_before_downloading(hub_server):
    before = len(hub_server.requests)
    with pytest.raises(ModelTooLargeError, match=r"needs about [\d,.]+ GiB"):
        loading.prepare("tiny-org/huge-llama")
    assert not any("/resolve/" in p for _, p in hub_server.requests[before:])


def test_pickle_only_is_refused(hub_server):
    with pytest.raises(NoSafetensorsError, match="pickled"):
        loading.prepare("tiny-org/pickle-only")


def test_remote_code_is_refused_and_never_run(hub_server):
    with pytest.raises(RemoteCodeError, match="trust_remote_code"):
        loading.load_causal_lm("tiny-org/remote-code")


def test_encoder_is_not_a_causal_lm(hub_server):
    with pytest.raises(CapabilityError, match="not a causal language model"):
        loading.load_causal_lm("tiny-org/tiny-bert")


def test_hub_down_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(HubUnavailableError, match="cannot be reached|answered with an error"):
        hub.search("llama")
    with pytest.raises((HubUnavailableError, ModelNotCachedError)):
        loading.prepare("someone/some-model")


def test_bad_ids_are_unknown():
    for bad in ("", "no-slash", "a/b/c", "../etc/passwd", "smollm2-135m-instruct:fp8"):
        with pytest.raises(UnknownModelError):
            get_model(bad)
