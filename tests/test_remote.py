"""The remote engine against real servers on loopback.

The main one is llama-cpp-python's own OpenAI-compatible server serving the bundled SmolLM2
GGUF file with an API key (tests/openai_server.py starts it once per run and stops it by pid).
The failures use what really fails that way: a port nothing listens on, the wrong key, a model
the server does not list, a second server killed with SIGKILL half way through an answer,
Python's http.server (not an API), a socket that never answers, and a small stand-in that
ignores max_tokens or stalls half way.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from playground import endpoints
from playground.endpoints import add_endpoint, get_endpoint, list_endpoints, remove_endpoint
from playground.engines import EngineModel, TokenLogprob
from playground.engines import remote
from playground.errors import (
    EndpointAuthError,
    EndpointConfigError,
    EndpointModelError,
    EndpointProtocolError,
    EndpointStoreError,
    EndpointTimeoutError,
    EndpointUnreachableError,
    InputError,
)
from playground.generate import GenerationSettings
from playground.registry import endpoint_id, get_model
from tests.openai_server import (
    LlamaServer,
    MisbehavingServer,
    PlainHTTPServer,
    SilentServer,
    free_port,
    llama_cpp_available,
)

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-7f3a9c0d2b8e41f6a5c3d9e0b1a27f48"  # what the test server wants
KEY_ENV = "PLAYGROUND_TEST_REMOTE_KEY"
PROMPT = "Name three colours of the rainbow."
GREEDY = GenerationSettings(max_new_tokens=24, temperature=0.0)

needs_llama = pytest.mark.skipif(llama_cpp_available() is not None, reason=str(llama_cpp_available()))


@pytest.fixture(scope="session")
def server():
    s = LlamaServer(api_key=KEY).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def lab(server, monkeypatch):
    """The test server added as the endpoint 'lab', its key in an environment variable."""
    monkeypatch.setenv(KEY_ENV, KEY)
    add_endpoint("lab", server.url, key_env=KEY_ENV, timeout=60, replace_existing=True)
    yield get_endpoint("lab")
    remove_endpoint("lab")


@pytest.fixture
def lm(lab):
    return remote.load(get_model(endpoint_id("lab", "smollm2")))


def _raw(server, path: str, body: dict) -> dict:
    """The same request as a bare HTTP client sends it, not streamed."""
    r = httpx.post(server.url + path, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    r.raise_for_status()
    return r.json()


def _consume(stream):
    chunks = list(stream)
    return chunks, stream.result


# --- endpoints: the store ------------------------------------------------------------------


def test_urls_with_credentials_or_keys_are_refused_without_repeating_them():
    with pytest.raises(EndpointConfigError) as err:
        add_endpoint("bad", "http://alice:hunter2secret@llm.example.org:8000/v1")
    assert "hunter2secret" not in str(err.value) and "alice" not in str(err.value)
    assert "llm.example.org" in str(err.value)
    with pytest.raises(EndpointConfigError, match="http:// or https://"):
        add_endpoint("bad", "ftp://llm.example.org/v1")
    with pytest.raises(EndpointConfigError, match="no host"):
        add_endpoint("bad", "http:///v1")
    with pytest.raises(EndpointConfigError) as err:
        add_endpoint("bad", "https://llm.example.org/v1?api_key=abc123secret")
    assert "abc123secret" not in str(err.value)
    with pytest.raises(EndpointConfigError) as err:  # the key pasted where its variable's name goes
        add_endpoint("bad", "https://llm.example.org/v1", key_env="hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345")
    assert "AbCdEf" not in str(err.value) and "session" in str(err.value)
    with pytest.raises(EndpointConfigError, match="name"):
        add_endpoint("has space", "https://llm.example.org/v1")
    with pytest.raises(InputError, match="timeout is 0.1"):
        add_endpoint("fast", "https://llm.example.org/v1", timeout=0.1)
    assert endpoints.normalize_url("HTTP://LLM.example.org:8000") == "http://llm.example.org:8000/v1"
    assert endpoints.normalize_url("https://router.huggingface.co/v1/") == "https://router.huggingface.co/v1"
    assert "bad" not in [e.name for e in list_endpoints()]


def test_endpoints_survive_a_restart_and_no_key_reaches_the_disk(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("PLAYGROUND_DATA", str(data))
    monkeypatch.setenv(KEY_ENV, KEY)
    add_endpoint("team-vllm", "https://vllm.example.org:8443/v1", key_env=KEY_ENV, timeout=90)
    add_endpoint("ollama", "http://127.0.0.1:11434")
    with pytest.raises(EndpointConfigError, match="exists already"):
        add_endpoint("ollama", "http://127.0.0.1:11435")
    endpoints.update_endpoint("ollama", timeout=15)
    # a new process (a restart) reads them back
    out = subprocess.run(
        [sys.executable, "-c", "import json; from playground.endpoints import list_endpoints; "
         "print(json.dumps([[e.name, e.url, e.key_env, e.timeout] for e in list_endpoints()]))"],
        cwd=ROOT, env={**os.environ, "PLAYGROUND_DATA": str(data)}, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [["team-vllm", "https://vllm.example.org:8443/v1", KEY_ENV, 90.0],
                                      ["ollama", "http://127.0.0.1:11434/v1", "", 15.0]]
    # the key was in the environment, never in what is stored
    for path in data.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert remove_endpoint("ollama") and not remove_endpoint("ollama")
    assert [e.name for e in list_endpoints()] == ["team-vllm"]


def test_an_unreadable_store_is_kept_and_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_DATA", str(tmp_path))
    (tmp_path / "endpoints.json").write_text("{not json")
    with pytest.raises(EndpointStoreError, match="endpoints.json"):
        list_endpoints()
    with pytest.raises(EndpointStoreError):
        add_endpoint("x", "http://127.0.0.1:1/v1")
    assert (tmp_path / "endpoints.json").read_text() == "{not json"  # nothing a person built is overwritten


# --- the real server --------------------------------------------------------------------


@needs_llama
def test_models_are_listed_from_the_server(lab):
    models = remote.list_models("lab")
    assert [m.id for m in models] == ["smollm2"]
    assert [m.id for m in remote.list_models(lab, api_key=KEY)] == ["smollm2"]


@needs_llama
def test_a_loaded_remote_model_is_an_engine_model_and_never_shows_its_key(lab, server):
    lm = remote.load(get_model(endpoint_id("lab", "smollm2")), api_key=KEY)
    assert isinstance(lm, EngineModel)
    assert lm.engine == "remote" and lm.tokenizer is None and lm.memory_bytes == 0
    assert lm.capabilities.top_distribution and not lm.capabilities.attention
    assert KEY not in repr(lm) and KEY not in str(lm) and KEY not in repr(lm._key)
    assert lm.key_source == "typed for this session"
    with pytest.raises(TypeError):
        pickle.dumps(lm)
    # a cache keyed this way never hands one session's key to another
    assert remote.cache_key(lm.id, KEY) != remote.cache_key(lm.id, "another-key") != remote.cache_key(lm.id)
    assert KEY not in repr(remote.cache_key(lm.id, KEY))
    # the app's way in: load_causal_lm, generate.stream
    from playground import generate
    from playground.loading import load_causal_lm

    lm2 = load_causal_lm(endpoint_id("lab", "smollm2"))
    assert lm2.key_source == f"${KEY_ENV}"
    result = generate.generate(lm2, PROMPT, GREEDY)
    assert result.engine == "remote" and result.text.strip()
    # an answer with the typed key leaves no trace of it in the data folder or the result
    typed = generate.generate(lm, PROMPT, GREEDY)
    assert typed.text == result.text and KEY not in repr(typed)
    from playground.paths import data_root

    for path in data_root().rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


@needs_llama
def test_streamed_chat_equals_the_non_streamed_answer_at_temperature_0(lm, server):
    chunks, result = _consume(lm.stream(PROMPT, GREEDY))
    assert len(chunks) > 3 and result.logprobs == ()  # none asked for by default: they slow a llama.cpp server
    assert "".join(c.text for c in chunks) == result.text
    raw = _raw(server, "/chat/completions", {
        "model": "smollm2", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 24,
        "temperature": 0.0, "top_p": 1.0, "seed": 0, "top_k": 0, "repeat_penalty": 1.0})
    assert result.text == raw["choices"][0]["message"]["content"]
    assert result.engine == "remote" and result.model_id == "endpoint:lab/smollm2"
    assert result.finish_reason in ("max tokens", "end of turn")
    assert result.generated_tokens == raw["usage"]["completion_tokens"]
    assert 0 < result.time_to_first_token <= result.total_seconds and result.tokens_per_second > 0
    assert result.error is None


@needs_llama
def test_streamed_completion_of_raw_text_equals_the_non_streamed_one(lm, server):
    text = "The three primary colours are"
    s = lm.stream(text, GenerationSettings(max_new_tokens=16), use_chat_template=False)
    chunks, result = _consume(s)
    assert s.prompt == text and not s.templated
    raw = _raw(server, "/completions", {"model": "smollm2", "prompt": text, "max_tokens": 16, "temperature": 0.0,
                                         "top_k": 0, "repeat_penalty": 1.0})
    assert result.text == raw["choices"][0]["text"]
    assert result.finish_reason == "max tokens" and result.new_tokens == 16


@needs_llama
def test_each_token_has_its_logprob_and_the_greedy_token_is_its_top_alternative(lm):
    chunks, result = _consume(lm.stream(PROMPT, GREEDY, top_logprobs=5))
    lps = result.logprobs
    assert len(lps) == result.new_tokens > 0
    assert all(isinstance(t, TokenLogprob) and t.token_id is None for t in lps)
    assert sum(len(c.logprobs) for c in chunks) == len(lps)
    assert "".join(t.text for t in lps) == result.text
    for t in lps:
        assert t.logprob <= 0
        assert 1 <= len(t.alternatives) <= 6
        assert [a.logprob for a in t.alternatives] == sorted((a.logprob for a in t.alternatives), reverse=True)
        assert t.alternatives[0].text == t.text  # greedy: the chosen token is the most likely
        assert math.isclose(t.alternatives[0].logprob, t.logprob, abs_tol=1e-5)
        assert sum(math.exp(a.logprob) for a in t.alternatives) <= 1 + 1e-4


@needs_llama
def test_top_distribution_and_other_sum_to_one(lm):
    prefix = "The capital of France is"
    d = lm.top_distribution(prefix, 10)
    assert d.api == "completions" and len(d.choices) == 10 and d.prompt == prefix
    probs = [math.exp(c.logprob) for c in d.choices]
    assert probs == sorted(probs, reverse=True)
    assert 0 < d.other < 1 and math.isclose(sum(probs) + d.other, 1.0, abs_tol=1e-6)
    assert "top 10" in d.note and "other" in d.note
    # the top token is the one greedy generation takes next
    _, result = _consume(lm.stream(prefix, GenerationSettings(max_new_tokens=1), use_chat_template=False))
    assert result.text == d.choices[0].text
    chat = lm.top_distribution("Say yes.", 5, use_chat_template=True)
    assert chat.api == "chat" and len(chat.choices) == 5 and math.isclose(
        sum(math.exp(c.logprob) for c in chat.choices) + chat.other, 1.0, abs_tol=1e-6)
    with pytest.raises(InputError, match="top_n is 50"):
        lm.top_distribution(prefix, 50)


@needs_llama
def test_cancel_stops_the_server_generating(lm, server):
    s = lm.stream("Count from 1 to 1000, separated by commas: 1, 2, 3,",
                  GenerationSettings(max_new_tokens=1500), use_chat_template=False, top_logprobs=0)
    got = []
    t0 = time.perf_counter()
    for chunk in s:
        got.append(chunk.text)
        if len(got) == 5:
            s.cancel()
    assert time.perf_counter() - t0 < 30
    assert s.result.finish_reason == "cancelled" and s.result.text == "".join(got) and len(got) >= 5
    # The server runs one generation at a time (started with interrupt_requests off): if it were
    # still generating 1,500 tokens, this one-token request would wait for it.
    t1 = time.perf_counter()
    quick = lm.stream("Hi", GenerationSettings(max_new_tokens=1), use_chat_template=False)
    _consume(quick)
    assert time.perf_counter() - t1 < 8, "the server was still busy with the cancelled answer"
    assert "disconnected" in server.log().lower()


# --- each failure -------------------------------------------------------------------------


def test_a_dead_port_fails_at_once():
    add_endpoint("dead", f"http://127.0.0.1:{free_port()}/v1", replace_existing=True)
    t0 = time.perf_counter()
    with pytest.raises(EndpointUnreachableError, match="Nothing answers"):
        remote.list_models("dead")
    assert time.perf_counter() - t0 < 2
    with pytest.raises(EndpointUnreachableError):
        remote.load(endpoint_id("dead", "any"))
    remove_endpoint("dead")


@needs_llama
def test_a_wrong_key_or_none_is_refused_without_showing_it(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    add_endpoint("lab-nokey", server.url, key_env=KEY_ENV, replace_existing=True)
    with pytest.raises(EndpointAuthError, match=f"{KEY_ENV} is not set"):
        remote.list_models("lab-nokey")
    wrong = "sk-wrong-0123456789abcdef0123456789"
    with pytest.raises(EndpointAuthError, match="401") as err:
        remote.load(endpoint_id("lab-nokey", "smollm2"), api_key=wrong)
    assert wrong not in str(err.value) and KEY not in str(err.value)
    # a model loaded with the right key, then given a wrong one, fails on its next answer
    lm = remote.load(endpoint_id("lab-nokey", "smollm2"), api_key=KEY)
    with pytest.raises(EndpointAuthError):
        list(lm.with_key(wrong).stream(PROMPT, GREEDY))
    remove_endpoint("lab-nokey")


@needs_llama
def test_a_model_the_server_does_not_serve(lab):
    # llama.cpp's server would answer any model name with its one model: load checks the list
    with pytest.raises(EndpointModelError, match="serves smollm2"):
        remote.load(get_model(endpoint_id("lab", "llama-3-70b")))


@needs_llama
def test_a_server_killed_mid_stream_keeps_what_arrived(monkeypatch):
    victim = LlamaServer(api_key=KEY, threads=1).start()
    try:
        monkeypatch.setenv(KEY_ENV, KEY)
        add_endpoint("victim", victim.url, key_env=KEY_ENV, replace_existing=True)
        lm = remote.load(endpoint_id("victim", "smollm2"))
        s = lm.stream("Count from 1 to 1000, separated by commas: 1, 2, 3,", GenerationSettings(max_new_tokens=800),
                      use_chat_template=False)
        got = []
        for chunk in s:
            got.append(chunk.text)
            if len(got) == 4:
                victim.kill()
        r = s.result
        assert r.finish_reason == "cut off" and r.text == "".join(got) and len(got) >= 4
        assert "broke" in r.error and "kept" in r.error
        with pytest.raises(EndpointUnreachableError):  # and the next request says nothing answers
            list(lm.stream(PROMPT, GREEDY))
    finally:
        victim.stop()
        remove_endpoint("victim")


def test_a_plain_http_server_is_not_an_openai_server(tmp_path):
    plain = PlainHTTPServer(tmp_path).start()
    try:
        add_endpoint("plain", f"http://127.0.0.1:{plain.port}", replace_existing=True)
        with pytest.raises(EndpointProtocolError, match="not as an OpenAI-compatible server.*404"):
            remote.list_models("plain")
        add_endpoint("plain-html", f"http://127.0.0.1:{plain.port}/page/v1", replace_existing=True)
        with pytest.raises(EndpointProtocolError, match="text/html, not JSON"):
            remote.load(endpoint_id("plain-html", "x"))
    finally:
        plain.stop()
        remove_endpoint("plain")
        remove_endpoint("plain-html")


def test_a_server_that_never_answers_times_out_with_the_timeout_named():
    silent = SilentServer().start()
    try:
        add_endpoint("silent", silent.url, timeout=1.5, replace_existing=True)
        t0 = time.perf_counter()
        with pytest.raises(EndpointTimeoutError, match="nothing for 1.5 s.*raise the endpoint's timeout"):
            remote.list_models("silent")
        assert 1.4 < time.perf_counter() - t0 < 5
        with pytest.raises(EndpointTimeoutError, match="nothing for 1 s"):
            remote.list_models("silent", timeout=1)
        with pytest.raises(InputError, match="timeout is 0.2"):
            remote.list_models("silent", timeout=0.2)
    finally:
        silent.stop()
        remove_endpoint("silent")


def test_a_server_that_stalls_half_way_keeps_what_arrived():
    stall = MisbehavingServer(mode="stall").start()
    try:
        add_endpoint("stall", stall.url, timeout=1.0, replace_existing=True)
        lm = remote.load(endpoint_id("stall", "stand-in"))
        chunks, r = _consume(lm.stream(PROMPT, GREEDY))
        assert [c.text for c in chunks] == [" w0", " w1", " w2"] and r.text == " w0 w1 w2"
        assert r.finish_reason == "cut off" and "sent nothing for 1 s" in r.error
    finally:
        stall.stop()
        remove_endpoint("stall")


def test_a_response_far_longer_than_asked_is_cut_at_max_tokens():
    chatty = MisbehavingServer(mode="too-long", tokens=300).start()
    try:
        add_endpoint("chatty", chatty.url, replace_existing=True)
        lm = remote.load(endpoint_id("chatty", "stand-in"))
        chunks, r = _consume(lm.stream(PROMPT, GenerationSettings(max_new_tokens=10)))
        assert len(chunks) == 10 and r.text == "".join(f" w{i}" for i in range(10))
        assert r.finish_reason == "max tokens" and "more than the 10 tokens" in r.error
        assert chatty.requests[-1]["max_tokens"] == 10 and chatty.requests[-1]["stream"] is True
    finally:
        chatty.stop()
        remove_endpoint("chatty")


def test_a_model_gone_from_the_server_is_a_404_that_names_it():
    gone = MisbehavingServer(mode="gone").start()
    try:
        add_endpoint("gone", gone.url, replace_existing=True)
        lm = remote.load(endpoint_id("gone", "stand-in"))  # listed, but the server no longer runs it
        with pytest.raises(EndpointModelError, match="does not serve the model 'stand-in' .*does not exist"):
            list(lm.stream(PROMPT, GREEDY))
    finally:
        gone.stop()
        remove_endpoint("gone")


def test_a_strict_server_gets_the_request_without_the_fields_it_refuses():
    strict = MisbehavingServer(mode="strict", tokens=5).start()
    try:
        add_endpoint("strict", strict.url, replace_existing=True)
        lm = remote.load(endpoint_id("strict", "stand-in"))
        _, r = _consume(lm.stream(PROMPT, GREEDY, top_logprobs=5))
        assert r.text == " w0 w1 w2 w3 w4" and r.finish_reason == "end of turn" and r.error is None
        first, second = strict.requests
        assert "top_k" in first and "top_k" not in second and second["top_logprobs"] == 5
        _consume(lm.stream(PROMPT, GREEDY, top_logprobs=5))  # the tier that worked is remembered: one request
        assert len(strict.requests) == 3 and "top_k" not in strict.requests[2]
    finally:
        strict.stop()
        remove_endpoint("strict")


@needs_llama
def test_compare_runs_a_transformers_model_and_an_endpoint_side_by_side(lm, smollm2):
    from playground import compare

    settings = GenerationSettings(max_new_tokens=12)
    sbs = compare.SideBySide([smollm2, lm], PROMPT, [compare.Entry(smollm2.id, settings), compare.Entry(lm.id, settings)])
    updates = list(sbs)
    local, served = sbs.result.runs
    assert local.error is None and served.error is None, (local.error, served.error)
    assert served.text == "".join(u.text for u in updates if u.column == 1) and served.text.strip()
    _, alone = _consume(lm.stream(PROMPT, settings))
    assert served.text == alone.text  # greedy: the same answer with a neighbour running or not
    assert served.metrics.finish_reason in ("max tokens", "end of turn") and served.metrics.tokens_per_second > 0
