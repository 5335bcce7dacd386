"""The remote engine: models served over the OpenAI HTTP API (vLLM, TGI, Ollama, LM Studio,
llama.cpp's server, Hugging Face Inference Providers).

    endpoints.add_endpoint("lab", "http://127.0.0.1:8080/v1", key_env="LAB_KEY")
    [m.id for m in list_models("lab")]                   # what the server serves
    lm = load(get_model("endpoint:lab/smollm2"))         # checks the server serves it
    s = lm.stream("Tell me a joke", GenerationSettings(max_new_tokens=40))
    for chunk in s: print(chunk.text, end="")            # chunk.logprobs: the server's top alternatives
    s.result.finish_reason, s.result.tokens_per_second
    lm.top_distribution("The capital of France is", 10)  # the server's top 10, the rest is `other`

**Why plain httpx** (not `huggingface_hub.InferenceClient`, not the `openai` package): the
Next token page needs the plain completions endpoint (``/v1/completions`` with ``logprobs=n``),
which InferenceClient does not speak (its text_generation is TGI's own API, not OpenAI's). The
`openai` package speaks it, but would be a new dependency (with pydantic models, jiter, distro)
for four JSON requests, retries connections with back-off by default (what makes a dead port
slow), and hides the socket we need to stop a stream at once. httpx is already installed (qdrant
and LangChain use it); with it a refused connection fails in milliseconds, the connect timeout
and the read timeout are ours to set, no request is retried behind our back, redirects are not
followed (an Authorization header never travels to another host), and cancelling shuts the
socket down so the server sees the disconnect and stops generating.

**Keys.** A key comes, per request, from the session (`api_key` given to `load`, kept in a
`Secret` whose repr is hidden and which refuses to be pickled) or else from the environment
variable the endpoint names (read at each request). It goes into the Authorization header and
nowhere else: not into the endpoint store, a URL, a message (a server's error text is scrubbed
of it), a log, an exception or a repr. Loaded models are cached and shared by every session, so
a model bound to a typed key must only be shared with sessions holding the same key: cache by
`cache_key(model_id, api_key)` (the key enters only as a salted hash), e.g.

    @st.cache_resource
    def remote_model(cache_key, model_id, _api_key):   # "_": Streamlit does not hash it
        return remote.load(get_model(model_id), api_key=_api_key)

or load once without a key and bind each session's key with `model.with_key(key)` (cheap).

**Failures**, each a `playground.errors.EndpointError` with what to do: nothing answers
(refused at once; a connect timeout of at most 5 s otherwise), a refused key (401/403), a model
the server does not serve (404, or absent from ``/v1/models``: llama.cpp's server answers any
name with its one model), a slow server (the endpoint's timeout, which the person sets, for the
first byte and between tokens), an HTTP server that is not OpenAI-compatible (HTML, or 404 on
``/v1/models``). Before the first token they are raised; after it, the stream keeps what arrived
and its result says why it stopped (`finish_reason` "cut off", `error` the message). A server
that sends more tokens than asked is cut at `max_new_tokens` here too ("max tokens", with an
`error` saying so).

Optional request fields go in tiers: first with ``stream_options`` (usage in the stream),
``top_k`` and llama.cpp's neutral ``repeat_penalty`` 1.0 (so greedy text matches the other
engines), then without them, then without log-probabilities; a server that answers 400/422 to
one tier gets the next, and the tier that worked is remembered per endpoint and model.

What it leaves out: the endpoint store (playground.endpoints), tokenization (a server's
tokenizer is not ours: `tokenizer` is None and token ids are unknown), and the sidebar form.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from playground.endpoints import Endpoint, get_endpoint
from playground.engines import REMOTE, Capabilities, TokenChoice, TokenLogprob, TopDistribution
from playground.errors import (
    CapabilityError,
    EndpointAuthError,
    EndpointError,
    EndpointModelError,
    EndpointProtocolError,
    EndpointResponseTooLongError,
    EndpointStreamError,
    EndpointTimeoutError,
    EndpointUnreachableError,
    InputError,
)
from playground.options import bounds, option, validate

Progress = Callable[[float, str], None]
CONNECT_TIMEOUT = 5.0  # seconds for the TCP (and TLS) connection; a refused one fails at once
_SALT = secrets.token_bytes(16)  # per process: a fingerprint means nothing outside it


@dataclass(frozen=True)
class RemoteOptions:
    """Per-request options of the remote engine (the endpoint's own timeout is `Endpoint.timeout`)."""

    # 0 by default: llama.cpp's server computes log-probabilities by sorting the whole vocabulary in
    # Python at every token, which made its generation 2-3x slower here (docs/bench-remote.md).
    # A page that shows each token's probability asks for them: `stream(..., top_logprobs=5)`.
    top_logprobs: int = option(0, 0, 20, "alternatives per generated token to ask the server for (0: none)", 1)
    top_n: int = option(10, 1, 20, "how many next tokens the Next token view asks the server for", 1)


def _quiet(fraction: float, message: str) -> None:
    pass


# --- keys ----------------------------------------------------------------------------------


class Secret:
    """A key held in memory: its repr and str are hidden, and it refuses to be pickled."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("A key is never pickled or written anywhere.")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(fingerprint(self._value))


def fingerprint(api_key: str | None) -> str:
    """A salted hash of a key (per process), to tell keys apart in a cache key; "" for no key."""
    if not api_key:
        return ""
    return hmac.new(_SALT, api_key.encode("utf-8"), hashlib.sha256).hexdigest()[:24]


def cache_key(model_id: str, api_key: str | None = None) -> tuple[str, str, str, float, str]:
    """What a cached RemoteModel depends on: the id, the endpoint's URL, key variable and timeout
    as stored now, and the typed key's fingerprint (never the key)."""
    from playground.registry import get_model

    spec = get_model(model_id)
    e = get_endpoint(spec.endpoint)
    return (spec.id, e.url, e.key_env, e.timeout, fingerprint(api_key))


def _scrub(text: str, key: str | None) -> str:
    """A server's text, shortened, with the key (should a server echo it) replaced."""
    text = re.sub(r"\s+", " ", text or "").strip()
    if key:
        text = text.replace(key, "***")
    return text[:300] + ("..." if len(text) > 300 else "")


# --- HTTP ----------------------------------------------------------------------------------

_CLIENT: httpx.Client | None = None
_CLIENT_LOCK = threading.Lock()
_TIERS_OK: dict[tuple[str, str, str], int] = {}  # (api base, model, path) -> first tier the server accepted
_TIERS_LOCK = threading.Lock()


def _client() -> httpx.Client:
    """One connection pool for the process (httpx.Client is thread-safe). It holds no key."""
    global _CLIENT
    with _CLIENT_LOCK:
        if _CLIENT is None:
            _CLIENT = httpx.Client(follow_redirects=False, headers={"User-Agent": "llm-playground"},
                                   limits=httpx.Limits(max_connections=32, max_keepalive_connections=8))
        return _CLIENT


def _timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(CONNECT_TIMEOUT, seconds))


def _check_timeout(seconds: float | None, endpoint: Endpoint) -> float:
    if seconds is None:
        return endpoint.timeout
    b = bounds(Endpoint, "timeout")
    if not isinstance(seconds, (int, float)) or not (b.lo <= seconds <= b.hi):
        raise InputError(f"timeout is {seconds!r}; it must be between {b.lo:g} and {b.hi:g} seconds ({b.help}).")
    return float(seconds)


def _where(endpoint: Endpoint) -> str:
    return f"the endpoint {endpoint.name!r} ({endpoint.url})"


def _key_hint(endpoint: Endpoint, had_key: bool) -> str:
    if not had_key:
        if endpoint.key_env:
            return f"No key was sent: ${endpoint.key_env} is not set. Set it, or type the key for this session."
        return "No key was sent: type the key for this session, or name the environment variable that holds it."
    source = "the key typed for this session" if endpoint.key_env == "" else f"the key (from ${endpoint.key_env} or typed for this session)"
    return f"Check {source}."


def _server_message(resp: httpx.Response, key: str | None) -> str:
    try:
        body = resp.read()
    except httpx.HTTPError:
        return ""
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return "" if "html" in resp.headers.get("content-type", "") else _scrub(text, key)
    msg: Any = data
    if isinstance(data, dict):
        msg = data.get("error", data.get("detail", data.get("message", data)))
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
    return _scrub(msg if isinstance(msg, str) else json.dumps(msg), key)


def _http_error(resp: httpx.Response, endpoint: Endpoint, path: str, model: str | None, key: str | None) -> EndpointError:
    """The error for an HTTP status that is not 2xx (the body is read here)."""
    status = resp.status_code
    ctype = resp.headers.get("content-type", "").split(";")[0] or "no content type"
    said = _server_message(resp, key)
    said_part = f" The server said: {said}" if said else ""
    where = _where(endpoint)
    if status in (401, 403):
        return EndpointAuthError(f"{where} refused the request (HTTP {status}). {_key_hint(endpoint, bool(key))}{said_part}")
    if status == 404:
        if path == "/models" or ("json" not in ctype):
            return EndpointProtocolError(
                f"Something answers at {endpoint.url}, but not as an OpenAI-compatible server: "
                f"{path.lstrip('/')} gave HTTP 404 ({ctype}). Check the base URL: for most servers it ends in /v1 "
                "(http://host:8000/v1; Ollama: http://host:11434/v1)."
            )
        return EndpointModelError(
            f"{where} does not serve the model {model!r} (HTTP 404).{said_part} Pick one of the models it lists."
        )
    if status in (408, 504):
        return EndpointTimeoutError(f"{where} timed out on its side (HTTP {status}); try again, or ask for fewer tokens.{said_part}")
    if 300 <= status < 400:
        target = resp.headers.get("location", "another address")
        return EndpointProtocolError(
            f"{where} redirects (HTTP {status}) to {_scrub(target, key)}; redirects are not followed: "
            "add the endpoint with the URL it redirects to."
        )
    if status == 429:
        return EndpointError(f"{where} is busy or rate-limited (HTTP 429); wait a little and try again.{said_part}")
    if status >= 500:
        return EndpointError(f"{where} failed on its side (HTTP {status}).{said_part} Try again, or check the server's log.")
    return EndpointError(f"{where} refused the request (HTTP {status}).{said_part}")


def _transport_error(exc: httpx.HTTPError, endpoint: Endpoint, timeout: float, during: str) -> EndpointError:
    where = _where(endpoint)
    if isinstance(exc, httpx.ConnectTimeout):
        return EndpointUnreachableError(
            f"Nothing answers at {endpoint.url}: no connection within {min(CONNECT_TIMEOUT, timeout):g} s. "
            "Check the host and port, and that the server is running and reachable from here."
        )
    if isinstance(exc, httpx.ConnectError):
        reason = str(exc).split("] ")[-1] or type(exc).__name__
        return EndpointUnreachableError(
            f"Nothing answers at {endpoint.url} ({reason}). Check that the server is running, "
            "and the host and port of the URL."
        )
    if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout)):
        return EndpointTimeoutError(
            f"{where} sent nothing for {timeout:g} s {during}. A big model can be slow to start: "
            f"raise the endpoint's timeout (now {timeout:g} s) in the sidebar, or try again."
        )
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError)):
        return EndpointStreamError(
            f"The connection to {where} broke {during} ({type(exc).__name__}). Is the server still running? Try again."
        )
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return EndpointProtocolError(f"The URL {endpoint.url} cannot be used ({type(exc).__name__}); edit the endpoint.")
    return EndpointError(f"The request to {where} failed {during} ({type(exc).__name__}).")


def _json_answer(resp: httpx.Response, endpoint: Endpoint, path: str) -> Any:
    ctype = resp.headers.get("content-type", "").split(";")[0] or "no content type"
    try:
        return resp.json()
    except ValueError:
        raise EndpointProtocolError(
            f"Something answers at {endpoint.url}, but not as an OpenAI-compatible server: {path.lstrip('/')} "
            f"gave {ctype}, not JSON. Check the base URL: for most servers it ends in /v1 (http://host:8000/v1)."
        ) from None


# --- listing the models --------------------------------------------------------------------


@dataclass(frozen=True)
class ServedModel:
    """One model an endpoint lists at /v1/models."""

    id: str
    owned_by: str = ""
    context_length: int | None = None  # if the server says (vLLM's max_model_len, and similar)


def _resolve(endpoint: Endpoint | str) -> Endpoint:
    return endpoint if isinstance(endpoint, Endpoint) else get_endpoint(endpoint)


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def list_models(endpoint: Endpoint | str, api_key: str | None = None, timeout: float | None = None) -> list[ServedModel]:
    """The models the server lists (GET <base>/models); the key is `api_key`, else the endpoint's variable."""
    e = _resolve(endpoint)
    t = _check_timeout(timeout, e)
    key = api_key or e.env_key()
    try:
        resp = _client().get(e.url + "/models", headers=_auth(key), timeout=_timeout(t))
    except httpx.HTTPError as exc:
        raise _transport_error(exc, e, t, "while listing its models") from None
    if resp.status_code != 200:
        raise _http_error(resp, e, "/models", None, key)
    data = _json_answer(resp, e, "/models")
    rows = data.get("data") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in rows):
        raise EndpointProtocolError(
            f"Something answers at {e.url}, but not as an OpenAI-compatible server: models gave JSON without "
            "a 'data' list of models with ids. Check the base URL (for most servers it ends in /v1)."
        )
    out = []
    for r in rows:
        ctx = next((r[k] for k in ("max_model_len", "context_length", "context_window", "max_context_length", "n_ctx")
                    if isinstance(r.get(k), int) and r[k] > 0), None)
        out.append(ServedModel(id=r["id"], owned_by=str(r.get("owned_by") or ""), context_length=ctx))
    return out


# --- the loaded model --------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class RemoteModel:
    """A model on an endpoint, ready to stream. Holds no weights, no tokenizer, and never shows its key."""

    spec: Any  # playground.registry.ModelSpec
    endpoint: Endpoint
    served: ServedModel
    load_seconds: float
    _key: Secret | None = field(default=None, compare=False)
    tokenizer: Any = None
    memory_bytes: int = 0

    def __repr__(self) -> str:
        return f"RemoteModel({self.spec.id!r}, url={self.endpoint.url!r}, key={self.key_source!r})"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("A RemoteModel may hold a key and is never pickled; load it again instead.")

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def engine(self) -> str:
        return "remote"

    @property
    def capabilities(self) -> Capabilities:
        return REMOTE

    @property
    def context_length(self) -> int:
        """The context the server reports for the model; 0 when it does not say."""
        return int(self.served.context_length or 0)

    @property
    def key_fingerprint(self) -> str:
        return fingerprint(self._key.reveal() if self._key else None)

    @property
    def key_source(self) -> str:
        """Where requests take their key from, in words (never the key)."""
        if self._key is not None:
            return "typed for this session"
        if self.endpoint.key_env:
            return f"${self.endpoint.key_env}" + ("" if self.endpoint.env_key() else " (not set)")
        return "none"

    def with_key(self, api_key: str | None) -> "RemoteModel":
        """The same model sending another key (None: the endpoint's variable); nothing is re-checked."""
        return replace(self, _key=Secret(api_key) if api_key else None)

    def _key_now(self) -> str | None:
        return self._key.reveal() if self._key is not None else self.endpoint.env_key()

    def stream(self, text: str, settings=None, use_chat_template: bool = True, system: str | None = None,
               *, timeout: float | None = None, top_logprobs: int | None = None) -> "RemoteStream":
        """Stream an answer: chat/completions (or, with `use_chat_template=False`, the plain
        completions endpoint with `text` as it is). Iterate for Chunks, then read `.result`."""
        from playground.generate import GenerationSettings

        return RemoteStream(self, text, settings or GenerationSettings(), use_chat_template, system,
                            _check_timeout(timeout, self.endpoint),
                            RemoteOptions().top_logprobs if top_logprobs is None else top_logprobs)

    def top_distribution(self, prefix_text: str, n: int | None = None, use_chat_template: bool = False,
                         system: str | None = None, timeout: float | None = None) -> "ServerTopDistribution":
        """The server's top-`n` next tokens after `prefix_text` (one token generated, greedy).

        Without the chat template it asks the completions endpoint for the token that follows the
        text as it is (``max_tokens=1, logprobs=n``); with it, the chat endpoint for the first token
        of the answer (``top_logprobs=n``). Everything not listed is `other`, and `api` says which was asked.
        """
        n = RemoteOptions().top_n if n is None else n
        validate(RemoteOptions(top_n=n))
        if not isinstance(prefix_text, str) or not prefix_text:
            raise InputError("The text is empty: type something for the model to continue.")
        t = _check_timeout(timeout, self.endpoint)
        key = self._key_now()
        model = self.spec.remote_model
        if use_chat_template:
            path, api = "/chat/completions", "chat"
            body = {"model": model, "messages": _messages(prefix_text, system), "max_tokens": 1, "temperature": 0.0,
                    "logprobs": True, "top_logprobs": n}
        else:
            path, api = "/completions", "completions"
            prompt = f"{system}\n\n{prefix_text}" if system else prefix_text
            body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": n}
        extras = {"top_k": 0, "repeat_penalty": 1.0}
        last: EndpointError | None = None
        for tier_body in (dict(body, **extras), body):
            try:
                resp = _client().post(self.endpoint.url + path, json=tier_body, headers=_auth(key), timeout=_timeout(t))
            except httpx.HTTPError as exc:
                raise _transport_error(exc, self.endpoint, t, "before the next token") from None
            if resp.status_code in (400, 422):
                last = _http_error(resp, self.endpoint, path, model, key)
                continue
            if resp.status_code != 200:
                raise _http_error(resp, self.endpoint, path, model, key)
            data = _json_answer(resp, self.endpoint, path)
            choices = _top_choices(data, api)
            if not choices:
                raise EndpointProtocolError(
                    f"{_where(self.endpoint)} answered without log-probabilities: it does not offer them for "
                    f"{model!r} on its {api} API (a llama.cpp server needs logits_all; vLLM allows up to max_logprobs). "
                    "The next-token view needs them."
                )
            return ServerTopDistribution(model_id=self.spec.id, prompt=prefix_text, choices=tuple(choices[:n]),
                                         api=api, asked=n)
        assert last is not None
        raise last


def load(spec, progress: Progress | None = None, api_key: str | None = None) -> RemoteModel:
    """A model on an endpoint, after checking the endpoint answers and lists it.

    `spec` is a remote catalogue entry (``endpoint:<endpoint>/<model>``) or its id. The key is
    `api_key` (typed for the session), else the endpoint's environment variable at each request.
    """
    from playground.registry import get_model

    report = progress or _quiet
    spec = get_model(spec) if isinstance(spec, str) else spec
    if spec.engine != "remote":
        raise CapabilityError(f"{spec.id} is not a model on an endpoint (its engine is {spec.engine}).")
    start = time.perf_counter()
    e = get_endpoint(spec.endpoint)
    report(0.1, f"asking {e.name} ({e.host}) for its models")
    served = list_models(e, api_key)
    match = next((m for m in served if m.id == spec.remote_model), None)
    if match is None:
        names = ", ".join(m.id for m in served[:12]) + (f" and {len(served) - 12} more" if len(served) > 12 else "")
        raise EndpointModelError(
            f"{_where(e)} does not serve {spec.remote_model!r}; it serves {names or 'no models'}. "
            "Pick one of those in the sidebar."
        )
    report(1.0, "ready")
    return RemoteModel(spec=spec, endpoint=e, served=match, load_seconds=time.perf_counter() - start,
                       _key=Secret(api_key) if api_key else None)


# --- parsing the server's answers ---------------------------------------------------------


@dataclass(frozen=True)
class ServerTopDistribution(TopDistribution):
    """The top of the next-token distribution as a server returns it, and which API gave it."""

    api: str = "completions"  # "completions" (the text as it is) or "chat" (the first token of the answer)
    asked: int = 0

    @property
    def note(self) -> str:
        where = ("completions API: the token after the text as it is" if self.api == "completions"
                 else "chat API: the first token of the answer")
        return (f"The server's top {len(self.choices)} next tokens ({where}); every other token of the "
                f"vocabulary together is the 'other' bar ({self.other:.1%}): the server does not send the rest.")


def _messages(text: str, system: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _sorted_choices(pairs) -> list[TokenChoice]:
    seen: dict[str, float] = {}
    for text, lp in pairs:
        lp = _float(lp)
        if isinstance(text, str) and lp is not None and (text not in seen or lp > seen[text]):
            seen[text] = lp
    return [TokenChoice(t, lp) for t, lp in sorted(seen.items(), key=lambda kv: -kv[1])]


def _token_logprobs(choice: dict, api: str) -> list[TokenLogprob]:
    """Per-token log-probabilities of one streamed choice, in either API's shape."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return []
    out: list[TokenLogprob] = []
    if api == "chat":
        for item in lp.get("content") or []:
            if not isinstance(item, dict) or _float(item.get("logprob")) is None or not isinstance(item.get("token"), str):
                continue
            alts = _sorted_choices((a.get("token"), a.get("logprob")) for a in item.get("top_logprobs") or []
                                   if isinstance(a, dict))
            out.append(_with_itself(item["token"], float(item["logprob"]), alts))
        return out
    tokens, values, tops = lp.get("tokens") or [], lp.get("token_logprobs") or [], lp.get("top_logprobs") or []
    for i, tok in enumerate(tokens):
        value = _float(values[i]) if i < len(values) else None
        if not isinstance(tok, str) or value is None:
            continue
        top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        out.append(_with_itself(tok, value, _sorted_choices(top.items())))
    return out


def _with_itself(text: str, logprob: float, alts: list[TokenChoice]) -> TokenLogprob:
    if alts and not any(a.text == text for a in alts):  # the chosen token is always among its alternatives
        alts = sorted(alts + [TokenChoice(text, logprob)], key=lambda c: -c.logprob)
    return TokenLogprob(text=text, logprob=logprob, alternatives=tuple(alts))


def _top_choices(data: Any, api: str) -> list[TokenChoice]:
    try:
        choice = data["choices"][0]
    except (KeyError, IndexError, TypeError):
        return []
    lp = choice.get("logprobs") if isinstance(choice, dict) else None
    if not isinstance(lp, dict):
        return []
    if api == "chat":
        content = lp.get("content") or []
        first = content[0] if content and isinstance(content[0], dict) else {}
        return _sorted_choices((a.get("token"), a.get("logprob")) for a in first.get("top_logprobs") or []
                               if isinstance(a, dict))
    tops = lp.get("top_logprobs") or []
    return _sorted_choices(tops[0].items()) if tops and isinstance(tops[0], dict) else []


_FINISH = {"length": "max tokens", "content_filter": "content filter", "tool_calls": "tool call",
           "function_call": "tool call"}


def _finish_reason(reason: str | None, stop_reason: Any, api: str, stops: tuple[str, ...]) -> str:
    if reason == "stop":
        if isinstance(stop_reason, str) and stop_reason in stops:
            return "stop sequence"
        return "end of turn" if api == "chat" else "end of sequence"
    return _FINISH.get(reason or "", reason or "end of sequence")


# --- streaming ----------------------------------------------------------------------------

_END = object()


class RemoteStream:
    """An iterator of `Chunk`s from a server, like `playground.generate.Stream`; `.result` at the end.

    The HTTP stream is read in a worker thread and handed over through a queue, so `cancel()`
    (from any thread) ends the iteration at once; it also shuts the socket down, so the server
    sees the client go and stops generating.
    """

    def __init__(self, model: RemoteModel, text: str, settings, use_chat_template: bool, system: str | None,
                 timeout: float, top_logprobs: int) -> None:
        validate(settings)
        validate(RemoteOptions(top_logprobs=top_logprobs))
        if not isinstance(text, str) or not text.strip():
            raise InputError("The prompt is empty: type something for the model to answer.")
        self.model, self.settings, self.timeout, self.top_logprobs = model, settings, timeout, top_logprobs
        self.templated = bool(use_chat_template)
        self.api = "chat" if self.templated else "completions"
        self.messages = _messages(text, system) if self.templated else None
        # the exact text sent: the raw prompt for completions; for chat, the server applies its template
        self.prompt = text if self.templated else (f"{system}\n\n{text}" if system else text)
        self.result = None
        self.cancel_event = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._socket: socket.socket | None = None
        self._socket_lock = threading.Lock()
        self._error: EndpointError | None = None
        self._usage: dict = {}
        self._finish: str | None = None
        self._stop_reason: Any = None
        self._done = False  # the server said [DONE] or gave a finish_reason
        self._too_long = False
        self._started = False

    @property
    def prompt_tokens(self) -> int:
        """The prompt's length in the server's tokens, once the server has said (0 before)."""
        return int(self._usage.get("prompt_tokens") or 0)

    def cancel(self) -> None:
        """Stop: the iteration ends at once, and the connection is shut so the server stops."""
        self.cancel_event.set()
        self._queue.put(_END)
        with self._socket_lock:
            sock = self._socket
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reading thread; it closes the response
            except OSError:
                pass

    # the request, in tiers of optional fields
    def _bodies(self) -> list[dict]:
        s = self.settings
        body: dict[str, Any] = {"model": self.model.spec.remote_model, "stream": True, "max_tokens": s.max_new_tokens,
                                "temperature": s.temperature, "top_p": s.top_p, "seed": s.seed}
        if self.templated:
            body["messages"] = self.messages
        else:
            body["prompt"] = self.prompt
        if s.stop:
            body["stop"] = list(s.stop)
        with_lp = dict(body)
        if self.top_logprobs > 0:
            with_lp.update({"logprobs": True, "top_logprobs": self.top_logprobs} if self.templated
                           else {"logprobs": self.top_logprobs})
        extras = dict(with_lp, stream_options={"include_usage": True}, top_k=s.top_k, repeat_penalty=1.0)
        tiers = [extras, with_lp] + ([body] if self.top_logprobs > 0 else [])
        return tiers

    def _memo(self) -> tuple[str, str, str]:
        return (self.model.endpoint.url, self.model.spec.remote_model, self.api)

    def _work(self) -> None:
        e, key = self.model.endpoint, self.model._key_now()
        path = "/chat/completions" if self.templated else "/completions"
        tiers = self._bodies()
        with _TIERS_LOCK:
            first = _TIERS_OK.get(self._memo(), 0)
        try:
            for i in range(min(first, len(tiers) - 1), len(tiers)):
                if self.cancel_event.is_set():
                    return
                try:
                    with _client().stream("POST", e.url + path, json=tiers[i], headers=_auth(key),
                                          timeout=_timeout(self.timeout)) as resp:
                        if resp.status_code in (400, 422) and i < len(tiers) - 1:
                            resp.read()
                            continue
                        if resp.status_code != 200:
                            self._error = _http_error(resp, e, path, self.model.spec.remote_model, key)
                            return
                        with _TIERS_LOCK:
                            _TIERS_OK[self._memo()] = i
                        stream = resp.extensions.get("network_stream")
                        sock = stream.get_extra_info("socket") if stream is not None else None
                        with self._socket_lock:
                            self._socket = sock
                        if self.cancel_event.is_set():
                            return
                        self._read(resp, key)
                        return
                except httpx.HTTPError as exc:
                    if self.cancel_event.is_set():
                        return
                    during = "in the middle of the answer" if self._started else "before the first token"
                    self._error = _transport_error(exc, e, self.timeout, during)
                    return
        except EndpointError as exc:
            self._error = exc
        except Exception as exc:  # noqa: BLE001 - handed to the consumer's thread as an EndpointError
            self._error = EndpointError(f"Reading the answer of {_where(e)} failed ({type(exc).__name__}).")
        finally:
            with self._socket_lock:
                self._socket = None
            self._queue.put(_END)

    def _read(self, resp: httpx.Response, key: str | None) -> bool:
        """Read the event stream into the queue; True if any text arrived."""
        ctype = resp.headers.get("content-type", "")
        e, start = self.model.endpoint, self._t0
        limit = self.settings.max_new_tokens
        count = 0
        if "text/event-stream" not in ctype:
            if "json" in ctype:  # the server ignored stream=True: the whole answer at once
                data = _json_answer(resp, e, "/chat/completions" if self.templated else "/completions")
                return self._take(data, time.perf_counter() - start, 0, limit)[0] > 0
            self._error = EndpointProtocolError(
                f"{_where(e)} answered with {ctype.split(';')[0] or 'no content type'}, not an event stream: "
                "it is not an OpenAI-compatible server, or its base URL is wrong (it usually ends in /v1)."
            )
            return False
        for line in resp.iter_lines():
            if self.cancel_event.is_set():
                return count > 0
            if not line or line.startswith(":") or not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                self._done = True
                return count > 0
            try:
                data = json.loads(payload)
            except ValueError:
                self._error = EndpointProtocolError(
                    f"{_where(e)} sent a line of its stream that is not JSON; what arrived before it is kept.")
                return count > 0
            if isinstance(data, dict) and data.get("error"):
                err = data["error"]
                said = err.get("message", err) if isinstance(err, dict) else err
                self._error = EndpointStreamError(
                    f"{_where(e)} reported an error in the middle of the answer: {_scrub(str(said), key)}")
                return count > 0
            count, over = self._take(data, time.perf_counter() - start, count, limit)
            if over:
                return True
        return count > 0

    def _take(self, data: Any, now: float, count: int, limit: int) -> tuple[int, bool]:
        """Queue the text of one event; returns the token count so far and whether it went over `limit`."""
        if not isinstance(data, dict):
            return count, False
        if isinstance(data.get("usage"), dict):
            self._usage = data["usage"]
        for choice in data.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if self.templated:
                part = choice.get("delta") or choice.get("message") or {}
                text = part.get("content") if isinstance(part, dict) else None
            else:
                text = choice.get("text")
            text = text if isinstance(text, str) else ""
            lps = _token_logprobs(choice, self.api)
            n = len(lps) if lps else (1 if text else 0)
            if count + n > limit:  # more than asked: keep the first `limit` tokens and stop reading
                keep = limit - count
                if lps:
                    lps = lps[:keep]
                    text = "".join(t.text for t in lps)
                else:
                    text = ""
                self._too_long = True
                if text:
                    self._queue.put((text, tuple(lps), now))
                return limit, True
            count += n
            if text or lps:
                self._started = True
                self._queue.put((text, tuple(lps), now))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                self._stop_reason = choice.get("stop_reason")
                self._done = True
        return count, False

    def __iter__(self) -> Iterator:
        from playground.generate import Chunk, GenerationResult

        self._t0 = time.perf_counter()
        worker = threading.Thread(target=self._work, daemon=True, name=f"remote-stream-{self.model.spec.id}")
        worker.start()
        parts: list[str] = []
        logprobs: list[TokenLogprob] = []
        first: float | None = None
        chunks = 0
        finished = False
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    break
                text, lps, now = item
                if first is None:
                    first = now
                chunks += 1
                parts.append(text)
                logprobs.extend(lps)
                yield Chunk(text, (), now, lps)
            finished = True
        finally:
            if not finished:  # the consumer stopped early (a page rerun): stop the server too
                self.cancel()
        total = time.perf_counter() - self._t0
        err = self._error
        cancelled = self.cancel_event.is_set()
        if err is not None and not parts and not cancelled:
            raise err
        text = "".join(parts)
        counted = len(logprobs) if logprobs else chunks
        message: str | None = None
        if cancelled:
            reason = "cancelled"
        elif self._too_long:
            reason = "max tokens"
            message = str(EndpointResponseTooLongError(
                f"{_where(self.model.endpoint)} sent more than the {self.settings.max_new_tokens} tokens asked for; "
                f"the answer is cut at {self.settings.max_new_tokens} here."))
        elif err is not None:
            reason, message = "cut off", f"The answer was cut off: {err} What arrived is kept."
        elif not self._done:
            reason = "cut off"
            message = (f"The answer was cut off: the stream from {_where(self.model.endpoint)} ended without "
                       "saying why (no finish reason, no [DONE]). What arrived is kept.")
        else:
            reason = _finish_reason(self._finish, self._stop_reason, self.api, tuple(self.settings.stop))
        generated = counted
        usage_tokens = self._usage.get("completion_tokens")
        if isinstance(usage_tokens, int) and not (cancelled or self._too_long or err is not None):
            generated = usage_tokens
            if usage_tokens > self.settings.max_new_tokens and message is None:
                message = str(EndpointResponseTooLongError(
                    f"{_where(self.model.endpoint)} says it generated {usage_tokens} tokens, more than the "
                    f"{self.settings.max_new_tokens} asked for."))
        self.result = GenerationResult(
            model_id=self.model.spec.id, prompt=self.prompt, prompt_tokens=self.prompt_tokens, text=text,
            token_ids=(), finish_reason=reason, time_to_first_token=first if first is not None else total,
            total_seconds=total, engine="remote", logprobs=tuple(logprobs), generated_tokens=generated,
            error=message,
        )
