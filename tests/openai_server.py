"""Servers on loopback for the remote-engine tests and benchmark.

- `LlamaServer`: llama-cpp-python's own OpenAI-compatible server (``python -m llama_cpp.server``)
  serving the bundled SmolLM2 GGUF file with an API key: the real thing the engine talks to.
- `PlainHTTPServer`: Python's `http.server` answering HTML and 404s: a URL that is not an
  OpenAI-compatible server.
- `SilentServer`: accepts connections and never answers: a server that is too slow.
- `MisbehavingServer`: speaks just enough of the API to misbehave in ways a real server does
  only rarely: it streams far more tokens than asked, or stops sending half way.

Each starts on a free loopback port and is stopped by its process id (or its thread).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


from tests.appserver import free_port  # noqa: E402, F401  (importers take it from here too)


def smollm2_gguf() -> Path:
    """The bundled SmolLM2 GGUF file, found as playground.loading does."""
    from playground.loading import _gguf_source
    from playground.registry import get_model

    folder, name = _gguf_source(get_model("smollm2-135m-instruct"), lambda f, m: None)
    return folder / name


def llama_cpp_available() -> str | None:
    """None if llama-cpp-python's server can run here, else why not."""
    try:
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            return "llama-cpp-python is not installed (scripts/setup.sh builds it)"
        for mod in ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
            if importlib.util.find_spec(mod) is None:
                return f"llama-cpp-python's server extras are missing ({mod}); install llama-cpp-python[server]"
    except Exception as exc:  # noqa: BLE001
        return f"llama-cpp-python cannot be imported: {exc}"
    return None


# Runs llama_cpp.server as ``python -m llama_cpp.server`` would; with "no-repack" first, every model
# opens without llama.cpp's extra buffer types (as playground.engines.llamacpp.extra_buffers_off):
# a build made with GGML_NATIVE on a CPU that reports AMX repacks weights into AMX tiles, and a VM
# that reports AMX without enabling it kills the server at the first token (SIGILL).
_LAUNCH = """
import runpy, sys
if sys.argv[1] == "no-repack":
    import llama_cpp.llama_cpp as low
    default = low.llama_model_default_params
    def without_extra_buffers():
        params = default()
        params.use_extra_bufts = False
        return params
    low.llama_model_default_params = without_extra_buffers
sys.argv = ["llama_cpp.server"] + sys.argv[2:]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


class LlamaServer:
    """llama-cpp-python's server on a free loopback port; `.url` is the API base (…/v1).

    `start()` waits until it answers and has generated one token. If that token kills it with
    a signal (SIGILL or SIGSEGV: weights repacked for instructions the machine refuses, see _LAUNCH), it starts it
    again without repacking and says so in `.repack` (False).
    """

    def __init__(self, api_key: str, alias: str = "smollm2", model: Path | None = None, threads: int = 2,
                 interrupt_requests: bool = False, log: Path | None = None, n_ctx: int = 2048) -> None:
        self.api_key, self.alias, self.model = api_key, alias, model or smollm2_gguf()
        self.threads, self.interrupt_requests, self.n_ctx = threads, interrupt_requests, n_ctx
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log or (ROOT / "artifacts" / f"llama-server-{self.port}.log")
        self.proc: subprocess.Popen | None = None
        self.repack = True

    def start(self, timeout: float = 120) -> "LlamaServer":
        self._launch(timeout)
        if not self._first_token():
            # killed by a signal: on a VM that reports AMX but does not allow it, the repacked weights'
            # first tile instruction is SIGILL, or SIGSEGV with another build (playground.engines.llamacpp)
            if self.proc is not None and self.proc.returncode is not None and self.proc.returncode < 0:
                self.repack = False
                self._launch(timeout)
                if self._first_token():
                    return self
            code = self.proc.returncode if self.proc is not None else None
            self.stop()
            raise RuntimeError(f"llama_cpp.server died at its first token (exit code {code}); see {self.log_path}")
        return self

    def _launch(self, timeout: float) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if getattr(self, "_log", None) is not None:
            self._log.close()
        self._log = open(self.log_path, "a")
        cmd = [sys.executable, "-c", _LAUNCH, "repack" if self.repack else "no-repack",
               "--model", str(self.model), "--model_alias", self.alias,
               "--api_key", self.api_key, "--host", "127.0.0.1", "--port", str(self.port),
               "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads), "--n_ctx", str(self.n_ctx),
               "--interrupt_requests", str(self.interrupt_requests), "--verbose", "False"]
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                req = urllib.request.Request(self.url + "/models", headers={"Authorization": f"Bearer {self.api_key}"})
                if urllib.request.urlopen(req, timeout=2).status == 200:
                    return
            except (OSError, urllib.error.URLError):
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {timeout} s; see {self.log_path}")

    def _first_token(self) -> bool:
        """Generate one token; False if the server died doing it."""
        # a prompt of some length: llama.cpp takes the repacked (AMX) kernels for batches, not single tokens
        prompt = "Tell me, in a few words, what the weather is like in Paris in spring and in autumn, please."
        body = json.dumps({"model": self.alias, "prompt": prompt * 3, "max_tokens": 2}).encode()
        req = urllib.request.Request(self.url + "/completions", data=body, headers={
            "Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=120).read()
            return True
        except OSError:
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            return False

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """Kill it at once (SIGKILL), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None) is not None:
            self._log.close()


class _ThreadServer:
    def __init__(self, handler) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False  # a stalled handler must not hold up stop()
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class PlainHTTPServer(_ThreadServer):
    """http.server serving a folder with one HTML page: /v1/models is a 404 page; `/page/v1/models` is HTML."""

    def __init__(self, folder: Path) -> None:
        (folder / "page" / "v1").mkdir(parents=True, exist_ok=True)
        (folder / "index.html").write_text("<html><body><h1>Welcome</h1></body></html>")
        (folder / "page" / "v1" / "models").write_text("<html><body>not an API</body></html>")

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(folder), **kw)

            def guess_type(self, path):
                return "text/html"

            def log_message(self, *a):
                pass

        super().__init__(Handler)


class SilentServer:
    """Accepts TCP connections and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
            except OSError:
                continue

    def start(self) -> "SilentServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        for c in self.conns:
            c.close()
        self.sock.close()


class MisbehavingServer(_ThreadServer):
    """Lists one model and streams chat answers that break the rules: mode "too-long" sends
    `tokens` chunks whatever max_tokens says; "stall" sends three and then nothing; "gone"
    answers 404 with a JSON error, as vLLM does for a model it does not serve; "strict" refuses
    (400) any field outside the OpenAI API, as some hosted APIs do, and otherwise answers well."""

    def __init__(self, mode: str = "too-long", tokens: int = 200, model: str = "stand-in") -> None:
        outer = self
        self.mode, self.tokens, self.model = mode, tokens, model
        self.requests: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _json(self, obj, status=200):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/v1/models":
                    return self._json({"object": "list", "data": [{"id": outer.model, "object": "model"}]})
                self._json({"error": {"message": "not found"}}, 404)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                outer.requests.append(body)
                if outer.mode == "gone":
                    return self._json({"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                                 "type": "NotFoundError", "code": 404}}, 404)
                extra = sorted({"top_k", "repeat_penalty", "stream_options"} & set(body))
                if outer.mode == "strict" and extra:
                    return self._json({"error": {"message": f"Unrecognized request arguments: {', '.join(extra)}",
                                                 "type": "invalid_request_error"}}, 400)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                n = {"too-long": outer.tokens, "stall": 3}.get(outer.mode, min(outer.tokens, body.get("max_tokens", 16)))
                try:
                    for i in range(n):
                        event = {"choices": [{"index": 0, "delta": {"content": f" w{i}"}, "finish_reason": None}]}
                        self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                        self.wfile.flush()
                    if outer.mode == "stall":
                        time.sleep(30)
                        return
                    done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                    self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
                    self.wfile.flush()
                except OSError:
                    pass
                self.close_connection = True

        super().__init__(Handler)
