"""Session-state keys shared across pages, and URL <-> session-state helpers.

Each page names its own keys once, in a `K` class at its top, prefixed with the page's name;
the keys every page shares are here. `init(defaults)` sets a key only when it is missing
(first from the URL's query parameters, so a link reproduces a view), and
`to_url(keys)` writes the current values back to the URL.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from playground.registry import DEFAULT_CHAT_MODEL

MODEL = "model_id"  # the model picked in the sidebar (a catalogue id)
HUB_ID = "sidebar_hub_id"  # the Hub id typed in the sidebar


def _cast(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(float(raw))
    if isinstance(default, float):
        return float(raw)
    return raw


def init(defaults: dict[str, Any], url_keys: dict[str, str] | None = None) -> None:
    """Set each missing key: from the URL parameter named in `url_keys`, else its default.

    A URL value that does not parse falls back to the default rather than failing the page.
    """
    url_keys = url_keys or {}
    for key, default in defaults.items():
        if key in st.session_state:
            continue
        param = url_keys.get(key)
        value = default
        if param and param in st.query_params:
            try:
                value = _cast(st.query_params[param], default)
            except (TypeError, ValueError):
                value = default
        st.session_state[key] = value


def to_url(url_keys: dict[str, str]) -> None:
    """Write session values to the URL query parameters (only those that changed)."""
    for key, param in url_keys.items():
        if key in st.session_state:
            value = st.session_state[key]
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            if st.query_params.get(param) != text:
                st.query_params[param] = text


def init_shared() -> None:
    init({MODEL: DEFAULT_CHAT_MODEL, HUB_ID: ""}, {MODEL: "model"})


def current_model() -> str:
    """The id picked in the sidebar."""
    return st.session_state.get(MODEL, DEFAULT_CHAT_MODEL)
