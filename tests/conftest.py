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
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import appserver  # noqa: E402
from tests.appserver import CHROMIUM, CHROMIUM_ARGS, free_port  # noqa: E402, F401  (the tests import them from here)

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

def App(log_name: str, env: dict[str, str] | None = None) -> appserver.App:
    """A `streamlit run app.py` of the test's own (tests/appserver.py); the test fails if it does not start."""
    try:
        return appserver.App(log_name, env)
    except appserver.AppNotStarted as exc:
        pytest.fail(str(exc))


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
