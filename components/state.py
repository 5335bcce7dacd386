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


KEPT_KEYS = "_kept_keys"  # every key a page initialised with init(): what it must not lose
KEPT_VALUES = "_kept_values"  # their last values, copied at the end of every run
LAST_PAGE = "_last_page"  # the page the previous run showed


def init(defaults: dict[str, Any], url_keys: dict[str, str] | None = None) -> None:
    """Set each missing key: from the URL parameter named in `url_keys`, else its default.

    A URL value that does not parse falls back to the default rather than failing the page.
    The keys are remembered (see `remember` / `restore`), so what a person typed survives a visit
    to another page.
    """
    url_keys = url_keys or {}
    st.session_state.setdefault(KEPT_KEYS, set()).update(defaults)
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


def keep(*keys: str) -> None:
    """Keep keys a page sets itself rather than through init() (their first value is computed)."""
    st.session_state.setdefault(KEPT_KEYS, set()).update(keys)


def remember() -> None:
    """Copy the value of every key pages initialised (app.py calls this at the end of every run,
    even one cut short by st.stop or st.rerun).

    Streamlit drops the values of widgets that were not drawn after this, once the run is over; a
    key missing already here was deleted by the page itself (a message shown once, a request
    handled), and is not brought back.
    """
    ss = st.session_state
    ss[KEPT_VALUES] = {k: ss[k] for k in ss.get(KEPT_KEYS, ()) if k in ss}


def restore(page: str) -> None:
    """Put back the values Streamlit dropped (app.py calls this before the page runs).

    Streamlit deletes a widget's value at the end of any run that did not draw the widget: every
    run of another page, and a run cut short by a click before the widget was drawn. Without this,
    text typed on one page is gone after a look at another. On arriving at a page every kept value
    is assigned again, even one still held: the browser drew the page's widgets afresh and shows
    their defaults unless the server says the value was set.
    """
    ss = st.session_state
    arrived = ss.get(LAST_PAGE) != page
    ss[LAST_PAGE] = page
    for k, v in ss.get(KEPT_VALUES, {}).items():
        if k not in ss:
            ss[k] = v
        elif arrived:
            ss[k] = ss[k]
