"""Where LLM Playground keeps things on disk; each place can be moved by an environment variable.

- PLAYGROUND_CACHE: converted models (default ~/.cache/llm-playground). Safe to delete.
- PLAYGROUND_DATA: what users build: the Qdrant local store, the experiments database
  (default ~/.local/share/llm-playground). Not a cache: never deleted by the app.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    root = Path(os.environ.get("PLAYGROUND_CACHE") or Path.home() / ".cache" / "llm-playground")
    root.mkdir(parents=True, exist_ok=True)
    return root


def data_root() -> Path:
    root = Path(os.environ.get("PLAYGROUND_DATA") or Path.home() / ".local" / "share" / "llm-playground")
    root.mkdir(parents=True, exist_ok=True)
    return root
