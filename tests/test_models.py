"""The bundled models, loaded for real: facts, greedy generation, the conversion cache."""

from __future__ import annotations

import shutil
import time

import pytest
import torch

from playground import loading
from playground.errors import CapabilityError, ContextLengthError, CorruptCacheError, InputError
from playground.generate import GenerationSettings, encode_prompt, generate, stream
from playground.registry import get_model, list_models, variants


def test_catalogue_lists_bundled_models_and_variants():
    ids = [m.id for m in list_models(include_variants=True, include_cached_hub=False)]
    assert ids[:3] == ["smollm2-135m-instruct", "smollm2-135m-instruct:bf16", "smollm2-135m-instruct:int8"]
    assert "all-minilm-l6-v2" in ids and "all-minilm-l6-v2:int8" not in ids
    assert get_model("all-minilm-l6-v2").can_embed and not get_model("all-minilm-l6-v2").can_generate
    assert [v.precision for v in variants("gemma-3-270m")] == ["fp32", "bf16", "int8"]


@pytest.mark.parametrize(
    "model_id, layers, heads, kv, vocab, ctx, chat",
    [
        ("smollm2-135m-instruct", 30, 9, 3, 49152, 8192, True),
        ("gemma-3-270m", 18, 4, 1, 262144, 32768, False),
        ("all-minilm-l6-v2", 6, 12, 12, 30522, 512, False),
    ],
)
def test_facts_of_bundled_models(model_id, layers, heads, kv, vocab, ctx, chat):
    f = loading.model_facts(model_id)
    assert (f.layers, f.heads, f.kv_heads, f.vocab_size, f.context_length, f.has_chat_template) == (
        layers, heads, kv, vocab, ctx, chat)
    assert f.memory_bytes == f.parameters * 4


def test_loaded_models_match_their_facts(smollm2, gemma, minilm):
    for lm in (smollm2, gemma, minilm):
        f = loading.model_facts(lm.id)
        assert sum(p.numel() for p in lm.model.parameters()) == f.parameters
        assert lm.num_layers == f.layers and lm.num_heads == f.heads
        # causal LMs: SDPA unless the weights are asked for (playground.attend); encoders: eager
        assert lm.model.config._attn_implementation == ("playground" if lm.spec.can_generate else "eager")
    assert len(smollm2.tokenizer) == 49152


def test_generation_runs_sdpa_and_equals_an_eager_model(smollm2):
    """Generation does not pay for attention weights it does not show, and gives the tokens the
    same weights give under transformers' own eager attention."""
    from transformers import AutoModelForCausalLM

    from playground import attend, passes

    eager = AutoModelForCausalLM.from_pretrained(smollm2.folder, attn_implementation="eager").eval()
    before = dict(attend.CALLS)
    r = generate(smollm2, "Name three colours.", GenerationSettings(max_new_tokens=24))
    assert attend.CALLS["eager"] == before["eager"]  # not one eager attention call
    assert attend.CALLS["sdpa"] - before["sdpa"] >= 24 * smollm2.num_layers - smollm2.num_layers
    ids = encode_prompt(smollm2.tokenizer, r.prompt, templated=True)
    ref = eager.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False)
    assert list(r.token_ids) == ref[0, ids.shape[1]:].tolist()
    before = dict(attend.CALLS)
    passes.attention_maps(smollm2, ids[0, :12])
    assert attend.CALLS["eager"] - before["eager"] == smollm2.num_layers  # the maps: one eager pass


@pytest.mark.parametrize("fixture, use_template", [("smollm2", True), ("gemma", False)])
def test_greedy_stream_equals_model_generate(request, fixture, use_template):
    lm = request.getfixturevalue(fixture)
    s = stream(lm, "Write one sentence about the sea.", GenerationSettings(max_new_tokens=20), use_chat_template=use_template)
    streamed = "".join(c.text for c in s)
    result = s.result
    ids = encode_prompt(lm.tokenizer, result.prompt, templated=use_template)
    ref = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False)
    assert list(result.token_ids) == ref[0, ids.shape[1]:].tolist()
    assert streamed == result.text == lm.tokenizer.decode(result.token_ids, skip_special_tokens=True)
    assert result.finish_reason in ("max tokens", "end of turn", "end of sequence")
    assert result.time_to_first_token <= result.total_seconds and result.tokens_per_second > 0


def test_chat_template_is_used_for_the_chat_model(smollm2):
    r = generate(smollm2, "Hi!", GenerationSettings(max_new_tokens=4))
    assert r.prompt.startswith("<|im_start|>") and r.prompt.rstrip().endswith("<|im_start|>assistant")


def test_seeded_sampling_is_reproducible(smollm2):
    s = GenerationSettings(max_new_tokens=12, temperature=1.0, seed=7)
    a, b = generate(smollm2, "Tell me a story", s), generate(smollm2, "Tell me a story", s)
    assert a.token_ids == b.token_ids


def test_seeded_sampling_is_reproducible_with_other_generations_running(smollm2, gemma):
    """Each stream draws from its own generator: a seed gives the same tokens alone or beside others."""
    import threading

    s = GenerationSettings(max_new_tokens=16, temperature=1.2, top_k=50, top_p=0.95, seed=11)
    alone = generate(smollm2, "Tell me a story", s)
    other = GenerationSettings(max_new_tokens=24, temperature=1.5, seed=3)
    results = {}
    threads = [threading.Thread(target=lambda: results.__setitem__("gemma", generate(gemma, "Once upon a time", other,
                                                                                      use_chat_template=False))),
               threading.Thread(target=lambda: results.__setitem__("smol", generate(smollm2, "Tell me a story", s)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["smol"].token_ids == alone.token_ids
    assert generate(smollm2, "Tell me a story", GenerationSettings(**{**s.__dict__, "seed": 12})).token_ids != alone.token_ids
    # top-k is honoured in each draw: with k=1 sampling is greedy whatever the temperature
    greedy = generate(smollm2, "Tell me a story", GenerationSettings(max_new_tokens=16))
    k1 = generate(smollm2, "Tell me a story", GenerationSettings(max_new_tokens=16, temperature=2.0, top_k=1, seed=5))
    assert k1.token_ids == greedy.token_ids


def test_system_message_goes_before_the_text_without_a_chat_template(gemma, smollm2):
    assert not gemma.tokenizer.chat_template  # the bundled Gemma 3 270M is a base model
    r = generate(gemma, "The capital of France is", GenerationSettings(max_new_tokens=3), system="Answer briefly.")
    assert r.prompt == "Answer briefly.\n\nThe capital of France is"
    bos = gemma.tokenizer.bos_token_id
    assert r.prompt_tokens == len(gemma.tokenizer("Answer briefly.\n\nThe capital of France is").input_ids)
    assert bos is not None and gemma.tokenizer(r.prompt).input_ids[0] == bos  # special tokens added, as for any plain text
    # with a chat template it is the system turn instead, and nothing is put before the text
    t = generate(smollm2, "Hi", GenerationSettings(max_new_tokens=2), system="Answer briefly.")
    assert "<|im_start|>system\nAnswer briefly.<|im_end|>" in t.prompt
    plain = generate(smollm2, "Hi", GenerationSettings(max_new_tokens=2), use_chat_template=False, system="Be brief.")
    assert plain.prompt == "Be brief.\n\nHi"


def test_stop_sequence_ends_generation(gemma):
    r = generate(gemma, "1, 2, 3, 4,", GenerationSettings(max_new_tokens=30, stop=(" 7",)), use_chat_template=False)
    assert r.finish_reason == "stop sequence" and " 7" in r.text and len(r.token_ids) < 30


def test_bad_generation_inputs(smollm2, minilm):
    with pytest.raises(InputError, match="empty"):
        generate(smollm2, "   ")
    with pytest.raises(InputError, match="max_new_tokens is 0"):
        generate(smollm2, "hi", GenerationSettings(max_new_tokens=0))
    with pytest.raises(ContextLengthError, match="context is 8,192"):
        generate(smollm2, "word " * 8200, GenerationSettings(max_new_tokens=8), use_chat_template=False)
    with pytest.raises(CapabilityError, match="encoder"):
        loading.load_causal_lm("all-minilm-l6-v2")


def test_cached_load_is_fast():
    start = time.perf_counter()
    lm = loading.load_causal_lm("smollm2-135m-instruct")
    assert time.perf_counter() - start < 3.0, "a load from the conversion cache should take under 3 s"
    assert lm.load_seconds < 3.0


def test_precision_variants_load(smollm2):
    bf16 = loading.load_causal_lm("smollm2-135m-instruct:bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert bf16.memory_bytes < 0.6 * smollm2.memory_bytes
    r = generate(bf16, "Hello", GenerationSettings(max_new_tokens=5))
    assert r.new_tokens >= 1


@pytest.mark.slow
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, monkeypatch):
    good = loading.prepare("smollm2-135m-instruct")
    monkeypatch.setenv("PLAYGROUND_CACHE", str(tmp_path))
    target = tmp_path / "models" / "smollm2-135m-instruct"
    shutil.copytree(good, target)
    loading.verify_cache(target)
    # a half-written safetensors file (as after a crash or a full disk)
    weights = target / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.truncate(weights.stat().st_size // 2)
    with pytest.raises(CorruptCacheError):
        loading.verify_cache(target)
    assert not loading.is_prepared("smollm2-135m-instruct")
    # a folder with no completion marker is half-written too
    other = tmp_path / "no-marker"
    shutil.copytree(good, other)
    (other / ".complete.json").unlink()
    with pytest.raises(CorruptCacheError, match="marker"):
        loading.verify_cache(other)
    # prepare() rebuilds it, and the rebuilt model gives the same logits as the good one
    seen = []
    rebuilt = loading.prepare("smollm2-135m-instruct", lambda f, m: seen.append(m))
    loading.verify_cache(rebuilt)
    assert any("de-quantizing" in m for m in seen)
    from safetensors.torch import load_file
    a, b = load_file(str(good / "model.safetensors")), load_file(str(rebuilt / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in list(a)[:20])
