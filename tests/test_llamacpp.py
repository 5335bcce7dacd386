"""The llama.cpp engine on the two bundled GGUF files, run by the real llama-cpp-python, and Hub GGUF
files against the local Hub (tests/hub_server.py)."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (scripts/setup.sh builds it)")

from playground import hub, loading, passes, stepping  # noqa: E402
from playground.engines import EngineModel, llamacpp  # noqa: E402
from playground.errors import (  # noqa: E402
    ContextLengthError,
    InputError,
    ModelNotCachedError,
    ModelTooLargeError,
    NoGGUFError,
    UnknownModelError,
)
from playground.generate import GenerationSettings, encode_prompt, generate, stream  # noqa: E402
from playground.loading import load_causal_lm  # noqa: E402
from playground.registry import get_model, gguf_id, list_models  # noqa: E402
from tests.hub_server import GGUF_NAME, GGUF_REPO, HUGE_NAME, HUGE_REPO, SPLIT_NAME  # noqa: E402

CHAT = "Name three colours of the rainbow."
BASE = "The capital of France is Paris. The capital of Italy is"


@pytest.fixture(scope="module")
def smol():
    return load_causal_lm("smollm2-135m-instruct:gguf")


@pytest.fixture(scope="module")
def gemma_gguf():
    return load_causal_lm("gemma-3-270m:gguf")


@pytest.fixture(params=["smol", "gemma"])
def each(request, smol, gemma_gguf):
    """Each bundled GGUF entry with a prompt that suits it (SmolLM2 chats, Gemma is a base model)."""
    return (smol, CHAT, True) if request.param == "smol" else (gemma_gguf, BASE, False)


def test_bundled_entries_load_as_llama_cpp_models(smol, gemma_gguf):
    for lm, quant, vocab in ((smol, "Q4_1", 49152), (gemma_gguf, "Q4_K_M", 262144)):
        assert isinstance(lm, llamacpp.LlamaModel) and isinstance(lm, EngineModel)
        assert lm.engine == "llama.cpp" and lm.spec.precision == quant and lm.capabilities.distribution
        assert lm.n_vocab == vocab and lm.context_length == llamacpp.N_CTX_CAP  # both were trained on more
        assert lm.n_ctx_train > llamacpp.N_CTX_CAP
        # the mapped file (weights still quantized) and one context's KV cache at 4,096 tokens in f16
        assert lm.memory_bytes == lm.path.stat().st_size + lm.kv_cache_bytes and lm.kv_cache_bytes > 0
    assert smol.tokenizer.convert_ids_to_tokens(sorted(smol.eos_ids)).count("<|im_end|>") == 1
    facts = smol.facts()
    assert (facts.layers, facts.heads, facts.kv_heads, facts.hidden_size) == (30, 9, 3, 576)
    assert 130e6 < facts.parameters < 140e6 and facts.context_length == 4096 and facts.has_chat_template
    g = gemma_gguf.facts()
    assert (g.layers, g.heads, g.kv_heads, g.vocab_size) == (18, 4, 1, 262144) and not g.has_chat_template


def test_streamed_text_equals_the_generated_text_and_greedy_is_deterministic(each):
    lm, prompt, chat = each
    settings = GenerationSettings(max_new_tokens=24)
    s = stream(lm, prompt, settings, use_chat_template=chat)
    chunks = list(s)
    r = s.result
    assert r is not None and r.engine == "llama.cpp" and r.model_id == lm.spec.id
    assert "".join(c.text for c in chunks) == r.text and r.text.strip()
    assert tuple(i for c in chunks for i in c.token_ids) == r.token_ids
    assert [lp for c in chunks for lp in c.logprobs] == list(r.logprobs)
    assert [lp.token_id for lp in r.logprobs] == list(r.token_ids)
    assert r.finish_reason in ("max tokens", "end of turn", "end of sequence")
    assert r.time_to_first_token <= r.total_seconds and r.tokens_per_second > 0
    assert s.prompt_tokens == r.prompt_tokens == len(encode_prompt(lm.tokenizer, s.prompt, chat)[0])
    again = generate(lm, prompt, settings, use_chat_template=chat)  # not streamed
    assert again.token_ids == r.token_ids and again.text == r.text


def test_logprobs_are_the_log_softmax_of_the_full_distribution(each):
    lm, prompt, chat = each
    s = stream(lm, prompt, GenerationSettings(max_new_tokens=6), use_chat_template=chat)
    for _ in s:
        pass
    r = s.result
    prefix = list(s.prompt_ids)
    for i, lp in enumerate(r.logprobs):
        dist = passes.next_token_distribution(lm, prefix + list(r.token_ids[:i]))
        assert dist.logits.dtype == torch.float32 and dist.logits.shape == (lm.n_vocab,)
        logp = torch.log_softmax(dist.logits.double(), dim=-1)  # (V,)
        assert abs(float(logp.exp().sum()) - 1.0) < 1e-4
        assert int(torch.argmax(dist.logits)) == lp.token_id  # greedy took the top token
        assert lp.logprob == pytest.approx(float(logp[lp.token_id]), abs=1e-3)
        assert lp.alternatives[0].token_id == lp.token_id and len(lp.alternatives) == llamacpp.ALTERNATIVES
        values = [a.logprob for a in lp.alternatives]
        assert values == sorted(values, reverse=True) and sum(math.exp(v) for v in values) <= 1 + 1e-4
        for a in lp.alternatives[:3]:
            assert a.logprob == pytest.approx(float(logp[a.token_id]), abs=1e-3)


def test_a_reused_kv_cache_gives_the_logits_of_a_fresh_pass(smol):
    ids = list(encode_prompt(smol.tokenizer, "One, two, three, four, five, six", False)[0].tolist())
    walked = [smol.next_token_distribution(ids[:n]).logits for n in range(3, len(ids) + 1)]  # each extends the last
    fresh = smol.position_logits(ids)  # (T, V) in one pass from an empty cache
    assert fresh.shape == (len(ids), smol.n_vocab)
    # One token at a time and a whole batch at once take different matrix kernels in llama.cpp (the
    # activations are quantized either way): measured, identical logits up to 8 tokens, then a KL of
    # about 1e-4 nats and probabilities within 0.005. A stale cache would be far off.
    for n, logits in zip(range(3, len(ids) + 1), walked):
        p, q = torch.softmax(logits.double(), -1), torch.softmax(fresh[n - 1].double(), -1)  # (V,)
        assert int(torch.argmax(p)) == int(torch.argmax(q))
        assert float((p * (p.log() - q.log())).sum()) < 2e-3 and float((p - q).abs().max()) < 0.02
    # going back to a shorter prefix cuts the cache back to it: the same logits as the first time
    back = smol.next_token_distribution(ids[:4]).logits
    assert torch.equal(back, walked[1])


def test_greedy_top1_mostly_agrees_with_transformers_fp32(smol, smollm2):
    text = ("The Moon is Earth's only natural satellite. It orbits at an average distance of 384,400 km, "
            "about thirty times the diameter of Earth. The Moon always shows the same face to Earth, "
            "because its rotation is tidally locked to its orbit. Its gravity causes the tides of the oceans.")
    ids = smollm2.tokenizer(text, return_tensors="pt").input_ids[0]  # (T,)
    with torch.no_grad():
        ref = smollm2.model(input_ids=ids[None]).logits[0].float()  # (T, V), the de-quantized fp32 copy
    got = smol.position_logits(ids)  # (T, V), the Q4_1 file on llama.cpp
    agree = float((ref.argmax(-1) == got.argmax(-1)).float().mean())
    kl = torch.nn.functional.kl_div(torch.log_softmax(got, -1), torch.log_softmax(ref, -1), log_target=True,
                                    reduction="none").sum(-1).mean()
    # Measured on this machine: 96.9% agreement (62 of 64 positions), mean KL 0.0042 nats (max 0.075).
    # The fp32 copy holds the GGUF's own de-quantized values; what differs is that llama.cpp also
    # quantizes the activations to 8 bits in its matrix products. Margin: 4 positions, 5x the KL.
    assert agree >= 0.90, f"top-1 agreement {agree:.3f}"
    assert float(kl) < 0.02, f"mean KL {float(kl):.4f}"


def test_the_variant_report_measures_the_gguf_file_against_fp32(smol, smollm2):
    from playground.compare import variant_report

    report = variant_report([smollm2, smol], "The Moon always shows the same face to Earth, because its rotation "
                            "is tidally locked to its orbit.", speed_prompt=None)
    row = report.row("Q4_1")
    assert row.weight_dtype == "Q4_1" and row.disk_bytes == smol.path.stat().st_size and row.memory_bytes == smol.memory_bytes
    assert row.parameters == report.row("fp32").parameters and row.top1_agreement >= 0.85 and 0 < row.kl_mean < 0.05


def test_cancel_stops_a_stream_promptly(smol):
    s = stream(smol, "Write a very long story about a dragon.", GenerationSettings(max_new_tokens=400))
    it = iter(s)
    next(it)
    next(it)
    t0 = time.perf_counter()
    s.cancel()
    rest = list(it)
    assert time.perf_counter() - t0 < 2.0
    assert s.result.finish_reason == "cancelled" and len(s.result.token_ids) < 10 + len(rest)
    assert len(s.result.token_ids) < 20
    # the context it held is free again
    assert generate(smol, CHAT, GenerationSettings(max_new_tokens=3)).new_tokens == 3


def test_a_stream_waiting_for_a_busy_context_can_be_cancelled(smol):
    one = llamacpp.LlamaModel(smol.spec, smol.path, smol.tokenizer, contexts=1)
    try:
        busy = stream(one, "Write a very long story about a dragon.", GenerationSettings(max_new_tokens=200))
        it = iter(busy)
        next(it)  # its worker now holds the one context
        waiting = stream(one, CHAT, GenerationSettings(max_new_tokens=8))
        done = threading.Event()
        out: list = []
        threading.Thread(target=lambda: (out.extend(waiting), done.set()), daemon=True).start()
        time.sleep(0.5)
        assert not done.is_set()  # it waits: one context, in use
        waiting.cancel()
        assert done.wait(2.0)
        assert waiting.result.finish_reason == "cancelled" and waiting.result.token_ids == () and out == []
        busy.cancel()
        list(it)
        assert generate(one, CHAT, GenerationSettings(max_new_tokens=2)).new_tokens == 2
    finally:
        one.close()


def test_two_streams_at_once_take_two_contexts_and_give_what_each_gives_alone(smol):
    a_alone = generate(smol, CHAT, GenerationSettings(max_new_tokens=8))
    b_alone = generate(smol, "Say hello in French.", GenerationSettings(max_new_tokens=8))
    a, b = stream(smol, CHAT, GenerationSettings(max_new_tokens=8)), stream(smol, "Say hello in French.",
                                                                            GenerationSettings(max_new_tokens=8))
    ia, ib = iter(a), iter(b)
    for _ in range(3):  # interleaved: both workers hold a context at once
        next(ia), next(ib)
    list(ia), list(ib)
    assert a.result.token_ids == a_alone.token_ids and b.result.token_ids == b_alone.token_ids
    assert len(smol._slots) == 2  # the second context opened when the calls overlapped, and stays


def test_sampling_is_seeded(smol):
    hot = GenerationSettings(max_new_tokens=12, temperature=1.2, top_p=0.95, seed=7)
    a = generate(smol, CHAT, hot)
    assert generate(smol, CHAT, hot).token_ids == a.token_ids
    others = {generate(smol, CHAT, GenerationSettings(max_new_tokens=12, temperature=1.2, seed=s)).token_ids
              for s in (1, 2, 3)}
    assert len(others | {a.token_ids}) > 1


def test_a_stop_string_ends_the_answer(gemma_gguf):
    free = generate(gemma_gguf, BASE, GenerationSettings(max_new_tokens=20), use_chat_template=False)
    word = free.text.strip().split()[0]
    r = generate(gemma_gguf, BASE, GenerationSettings(max_new_tokens=20, stop=(word,)), use_chat_template=False)
    assert r.finish_reason == "stop sequence" and word in r.text and len(r.token_ids) < len(free.token_ids)


def test_the_context_length_is_checked_with_the_numbers(smol):
    with pytest.raises(ContextLengthError, match=r"4,096") as err:
        stream(smol, "word " * 4000, GenerationSettings(max_new_tokens=200), use_chat_template=False)
    assert "200 new tokens" in str(err.value) and "8,192" in str(err.value)
    with pytest.raises(ContextLengthError, match=r"4,097 tokens"):
        smol.next_token_distribution([1] * 4097)
    with pytest.raises(InputError, match="empty"):
        smol.next_token_distribution([])
    with pytest.raises(InputError, match="vocabulary of 49,152"):
        smol.next_token_distribution([5, 49152])


def test_tokenizer_ids_agree_with_llama_cpp(each):
    lm, _, chat = each
    texts = ["Hello world", "The café's naïve façade — 東京 🎉 ünïcödé", "def f(x):\n    return x ** 2  # ok\n\n",
             "  leading spaces and 1234567 digits"]
    for text in texts:
        assert lm.tokenizer(text).input_ids == lm.llama_tokenize(text, add_bos=True), text
    if chat:
        prompt = lm.tokenizer.apply_chat_template([{"role": "user", "content": CHAT}], add_generation_prompt=True,
                                                  tokenize=False)
        assert encode_prompt(lm.tokenizer, prompt, True)[0].tolist() == lm.llama_tokenize(prompt, add_bos=False)


def test_the_step_through_walk_runs_on_llama_cpp(smol):
    prompt = stepping.make_prompt(smol.tokenizer, CHAT, True)
    before = passes.FORWARD_PASSES
    walk = stepping.greedy_walk(smol, prompt.ids, 5)
    assert passes.FORWARD_PASSES - before == len(walk.steps) == 5
    greedy = generate(smol, CHAT, GenerationSettings(max_new_tokens=5))
    assert walk.token_ids == greedy.token_ids
    cache = stepping.LogitsCache()
    first = cache.get(smol, prompt.ids)
    n = passes.FORWARD_PASSES
    assert cache.get(smol, prompt.ids) is first and passes.FORWARD_PASSES == n  # a hit runs nothing


# --- Hub GGUF files ---------------------------------------------------------------------------


def test_hub_gguf_files_are_listed_with_sizes_and_quantization(hub_server):
    files = hub.list_gguf_files(GGUF_REPO)
    by_name = {f.name: f for f in files}
    assert set(by_name) == {GGUF_NAME, SPLIT_NAME}
    assert by_name[GGUF_NAME].size == llamacpp.gguf_path(get_model("smollm2-135m-instruct:gguf")).stat().st_size
    assert by_name[GGUF_NAME].quantization == "Q4_1" and by_name[SPLIT_NAME].quantization == "Q8_0"
    assert by_name[SPLIT_NAME].is_split and not by_name[GGUF_NAME].is_split
    assert [f.size for f in files] == sorted(f.size for f in files)
    assert get_model(by_name[GGUF_NAME].id).engine == "llama.cpp"
    huge = hub.list_gguf_files(HUGE_REPO)[0]
    assert huge.size == 60 * 2**30 and huge.quantization == "Q4_K_M"
    with pytest.raises(NoGGUFError, match="no GGUF files"):
        hub.list_gguf_files("tiny-org/tiny-llama")
    with pytest.raises(UnknownModelError, match="not found"):
        hub.list_gguf_files("tiny-org/does-not-exist")


def test_a_gguf_file_too_large_is_refused_before_downloading(hub_server):
    before = len(hub_server.requests)
    with pytest.raises(ModelTooLargeError, match=r"60\.0 GiB"):
        hub.download_gguf(HUGE_REPO, HUGE_NAME)
    assert not any("/resolve/" in p for _, p in hub_server.requests[before:])
    with pytest.raises(InputError, match="split over several files"):
        hub.download_gguf(GGUF_REPO, SPLIT_NAME)
    with pytest.raises(UnknownModelError, match="no file 'nope.gguf'"):
        hub.download_gguf(GGUF_REPO, "nope.gguf")


def test_a_hub_gguf_file_downloads_with_progress_runs_and_works_offline(hub_server, monkeypatch, tmp_path, smol):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # a cache of its own
    seen: list[float] = []
    path = hub.download_gguf(GGUF_REPO, GGUF_NAME, lambda f, m: seen.append(f))
    assert path.is_file() and path.stat().st_size == smol.path.stat().st_size
    assert seen and seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen) and len(seen) > 3
    model_id = gguf_id(GGUF_REPO, GGUF_NAME)
    lm = load_causal_lm(model_id)
    try:
        assert lm.engine == "llama.cpp" and lm.spec.source == "hub" and lm.spec.precision == "Q4_1"
        # the same file as the bundled entry, with the tokenizer transformers reads out of it: the same answer
        mine = generate(lm, CHAT, GenerationSettings(max_new_tokens=10))
        assert mine.token_ids == generate(smol, CHAT, GenerationSettings(max_new_tokens=10)).token_ids
    finally:
        lm.close()
    assert model_id in [m.id for m in list_models()]  # from the cache alone
    assert model_id in [s.id for s in llamacpp.cached_gguf_entries()]
    assert loading.local_folder(model_id) == path.parent
    facts = loading.model_facts(model_id)  # from the file's metadata, the weights not loaded
    assert facts.engine == "llama.cpp" and facts.parameters == 134_515_008 and facts.layers == 30
    assert facts.disk_bytes == path.stat().st_size and facts.context_length == 4096 and facts.has_chat_template
    # offline: the cached file is used with no request; one never downloaded is "not cached"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub_server.requests)
    assert hub.download_gguf(GGUF_REPO, GGUF_NAME) == path
    assert [f.name for f in hub.list_gguf_files(GGUF_REPO)] == [GGUF_NAME]
    with pytest.raises(ModelNotCachedError, match="HF_HUB_OFFLINE"):
        hub.download_gguf(HUGE_REPO, HUGE_NAME)
    with pytest.raises(ModelNotCachedError, match="HF_HUB_OFFLINE"):
        hub.list_gguf_files(HUGE_REPO)
    assert len(hub_server.requests) == before


def test_a_greedy_answer_does_not_depend_on_what_ran_before(smol):
    """llama.cpp's logits depend slightly on how tokens were batched; a stream runs its prompt from an
    empty cache, so the same prompt gives the same greedy answer whatever the context held (this failed
    when a stream reused the cache of a longer prompt with the same start)."""
    s = GenerationSettings(max_new_tokens=16)
    first = generate(smol, "Name a colour.", s).text
    generate(smol, "Name a colour. Then name a fruit and say why you like it.", s)
    smol.next_token_distribution(smol.tokenizer("Name a colour. Blue is").input_ids)
    assert generate(smol, "Name a colour.", s).text == first


SPLIT = "Ahoy 🧑🏽‍🚀, naïve 日本語 — ok"  # emoji and CJK characters that byte-level tokens split


@pytest.mark.parametrize("which", ["transformers", "llama.cpp"])
def test_a_character_split_over_tokens_streams_whole(which, smollm2, smol):
    """Both engines' streams go through generate.Chunker: fed the real tokens one at a time, no chunk
    shows half a character (U+FFFD), the chunks add up to the decoded text, and every token is in
    exactly one chunk, in order."""
    from playground.generate import Chunker

    tok = (smollm2 if which == "transformers" else smol).tokenizer
    ids = tok(SPLIT, add_special_tokens=False)["input_ids"]
    singles = [tok.decode([i]) for i in ids]
    assert any("\ufffd" in piece for piece in singles), "the text must split a character over tokens"
    c = Chunker(tok)
    chunks = [ch for i, t in enumerate(ids) if (ch := c.add([t], (), float(i))) is not None]
    final, last = c.close(99.0)
    chunks += [last] if last is not None else []
    assert final == tok.decode(ids, skip_special_tokens=True) == SPLIT
    assert "".join(ch.text for ch in chunks) == final
    assert not any("\ufffd" in ch.text for ch in chunks)
    assert [t for ch in chunks for t in ch.token_ids] == ids
    assert any(len(ch.token_ids) > 1 for ch in chunks)  # tokens were held back until a character was whole
