"""Starting the app and a browser for the tests and the benchmarks: `streamlit run app.py` on a
free loopback port, with its log in artifacts/, and headless Chromium's arguments.

Plain Python, no pytest: bench/ starts servers the same way. What it leaves out: a server on another
address than loopback, or with Streamlit's file watcher (the tests never edit the code they run).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppNotStarted(RuntimeError):
    pass


class App:
    """A `streamlit run app.py` of its own, on a free loopback port, with its log in artifacts/.

    Raises AppNotStarted (the log's path in the message) if it does not answer its health check
    within `start_timeout` seconds."""

    def __init__(self, log_name: str, env: dict[str, str] | None = None, start_timeout: float = 60) -> None:
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
        deadline = time.time() + start_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if urllib.request.urlopen(self.url + "/_stcore/health", timeout=2).status == 200:
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise AppNotStarted(f"streamlit did not start; see {self.log_path}")

    def rss(self) -> int:
        """Resident memory of the server and its children, in bytes (0 once it is gone)."""
        import psutil

        try:
            p = psutil.Process(self.proc.pid)
            return p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
        except psutil.Error:
            return 0

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not self._log.closed:
            self._log.close()
