"""Shared fixtures: the real bundled models (loaded once per run), a running app for the
browser tests, headless Chromium, and AppTest helpers.

Every test runs with PLAYGROUND_DATA in a temporary folder, so nothing a test builds (Qdrant
collections, experiments) touches the user's data. The model cache (PLAYGROUND_CACHE) is
the real one that scripts/setup.sh filled.
"""

from __future__ import annotations

import os

# Before torch is imported: OpenMP threads that spin while waiting make a busy machine crawl.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import atexit
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# A data folder of this run's own (two runs at once in one checkout must not share a Qdrant store).
_DATA = Path(tempfile.mkdtemp(prefix="playground-test-data-"))
atexit.register(shutil.rmtree, _DATA, ignore_errors=True)
os.environ["PLAYGROUND_DATA"] = str(_DATA)
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --- real models, once per run -------------------------------------------------------------

@pytest.fixture(scope="session")
def smollm2():
    from playground.loading import load_causal_lm
    return load_causal_lm("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma():
    from playground.loading import load_causal_lm
    return load_causal_lm("gemma-3-270m")


@pytest.fixture(scope="session")
def minilm():
    from playground.loading import load_encoder
    return load_encoder("all-minilm-l6-v2")


@pytest.fixture(scope="session")
def embedder():
    from playground.loading import load_sentence_transformer
    return load_sentence_transformer("all-minilm-l6-v2")


# --- AppTest ------------------------------------------------------------------------------

def app_test(page: str | None = None, query: dict | None = None, timeout: float = 120):
    """An AppTest of app.py, switched to `page` (e.g. "views/tokens.py") and run once.

    Streamlit's AppTest shares this process's `st.cache_resource`, so models load once.
    """
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    if page is not None:
        at.switch_page(str(ROOT / page))
        at.run()
    return at


def texts(at) -> str:
    """All visible text of an AppTest run (markdown, captions, metrics, errors, infos...)."""
    parts: list[str] = []
    for root in (at.main, at.sidebar):
        for kind in ("title", "header", "subheader", "markdown", "caption", "text", "code", "error", "info",
                     "warning", "success", "latex"):
            for el in getattr(root, kind, []):
                parts.append(str(getattr(el, "value", "")))
        for m in root.metric:
            parts.append(f"{m.label}: {m.value}")
    return "\n".join(parts)


# --- the app in a real browser ----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """A `streamlit run app.py` of the tests' own, on a free loopback port, with its log in artifacts/."""

    def __init__(self, log_name: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / log_name
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/streamlit"), "run", str(ROOT / "app.py"), "--server.headless", "true",
             "--server.port", str(self.port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
             "--browser.gatherUsageStats", "false"],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(self.url + "/_stcore/health", timeout=2).status == 200:
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        pytest.fail(f"streamlit did not start; see {self.log_path}")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()


@pytest.fixture(scope="session")
def app_url():
    """Start `streamlit run app.py` on a free port; yield its URL; stop it by its pid."""
    app = App("streamlit-test.log")
    yield app.url
    app.stop()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (scripts/setup.sh --dev installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = ctx.new_page()
    p.set_default_timeout(180_000)
    yield p
    ctx.close()


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_idle(page, timeout: float = 180_000) -> None:
    """Wait until Streamlit has finished running the script: the app root's script state is
    'notRunning' (it is 'running' or 'rerunRequested' while a run is under way)."""
    page.wait_for_timeout(300)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', state="attached",
                           timeout=timeout)


# --- a local Hugging Face Hub -------------------------------------------------------------

@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    """A local Hub (tests/hub_server.py) reached through HF_ENDPOINT, with a fresh HF_HOME.

    Sets HF_ENDPOINT, HF_HOME and clears HF_TOKEN / HF_HUB_OFFLINE for the tests that use it,
    and restores them afterwards. Yields the HubServer (`.url`, `.requests`).
    """
    import huggingface_hub.constants as hf_constants

    from playground.loading import prepare
    from tests.hub_server import HubServer, build_repos

    repos = build_repos(tmp_path_factory.mktemp("hub-repos"), prepare("smollm2-135m-instruct"))
    server = HubServer(repos).start()
    hf_home = tmp_path_factory.mktemp("hf-home")
    saved = {k: os.environ.get(k) for k in ("HF_ENDPOINT", "HF_HOME", "HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE")}
    saved_consts = {k: getattr(hf_constants, k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_HOME")}
    os.environ.update(HF_ENDPOINT=server.url, HF_HOME=str(hf_home))
    for k in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE"):
        os.environ.pop(k, None)
    # huggingface_hub reads these once at import; playground.hub passes endpoint and cache_dir
    # explicitly on every call, and these make any other caller agree.
    hf_constants.HF_HOME = str(hf_home)
    hf_constants.HF_HUB_CACHE = str(hf_home / "hub")
    hf_constants.HF_HUB_OFFLINE = False
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for k, v in saved_consts.items():
            setattr(hf_constants, k, v)
