"""Session-state keys shared across pages, and URL <-> session-state helpers.

Each page names its own keys once, in a `K` class at its top, prefixed with the page's name;
the keys every page shares are here. `init(defaults, links)` sets a key only when it is missing
(first from the URL's query parameters, each checked by `playground.links` against what it feeds,
so a link reproduces a view and an odd link value is changed and said), and `to_url(links)` writes
the current values back to the URL, leaving out a text too long for a link.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from playground import links
from playground.links import Link
from playground.registry import DEFAULT_CHAT_MODEL

MODEL = "model_id"  # the model picked in the sidebar (a catalogue id)
HUB_ID = "sidebar_hub_id"  # the Hub id typed in the sidebar
MODEL_LINK = {MODEL: Link("model", links.Model())}


KEPT_KEYS = "_kept_keys"  # every key a page initialised with init(): what it must not lose
KEPT_VALUES = "_kept_values"  # their last values, copied at the end of every run
LAST_PAGE = "_last_page"  # the page the previous run showed


def _link(key: str, link: Link | str, default: Any) -> Link:
    """A declared Link as it is; a bare parameter name only for a text or a flag (a number must say its bounds)."""
    if isinstance(link, Link):
        return link
    if isinstance(default, bool):
        return Link(link, links.Flag())
    if isinstance(default, str):
        return Link(link, links.Text())
    raise TypeError(f"{key}: a linked number must declare its bounds (links.Link(param, links.Number...)).")


def init(defaults: dict[str, Any], url_keys: dict[str, Link | str] | None = None) -> list[str]:
    """Set each missing key: from its link value (checked by `playground.links.read`), else its default.

    A link value that had to change is changed and said: the notes are shown on the page (a warning
    at the top) and returned. The keys are remembered (see `remember` / `restore`), so what a person
    typed survives a visit to another page.
    """
    url_keys = url_keys or {}
    st.session_state.setdefault(KEPT_KEYS, set()).update(defaults)
    notes: list[str] = []
    for key, default in defaults.items():
        if key in st.session_state:
            continue
        value = default
        if key in url_keys:
            link = _link(key, url_keys[key], default)
            if link.param in st.query_params:
                reading = links.read(link.param, st.query_params.get_all(link.param), link.spec, default)
                value = reading.value
                if reading.note:
                    notes.append(reading.note)
        st.session_state[key] = value
    if notes:
        st.warning("\n\n".join(notes), icon=":material/link:")
    return notes


def to_url(url_keys: dict[str, Link | str]) -> list[str]:
    """Write session values to the URL query parameters (only those that changed).

    A text longer than a link carries (`links.LINK_TEXT_MAX`) is taken out of the link, and a caption
    says so; the sentences are returned.
    """
    left: list[str] = []
    for key, link in url_keys.items():
        if key not in st.session_state:
            continue
        value = st.session_state[key]
        link = _link(key, link, value)
        if not links.fits(value, link.spec):
            st.query_params.pop(link.param, None)
            left.append(links.left_out(link.param, value, link.spec))
            continue
        text = links.as_text(value)
        if st.query_params.get(link.param) != text:
            st.query_params[link.param] = text
    for sentence in left:
        st.caption(sentence)
    return left


def link_to(url_keys: dict[str, Link | str], changed: dict[str, Any] | None = None) -> str | None:
    """A relative link ("?a=1&b=2") to this page with the session's linked values, some of them `changed`;
    None when a text is too long for a link (the link would open on something else)."""
    from urllib.parse import urlencode

    changed = changed or {}
    params = {}
    for key, link in url_keys.items():
        if key not in st.session_state and key not in changed:
            continue
        value = changed.get(key, st.session_state.get(key))
        link = _link(key, link, value)
        if not links.fits(value, link.spec):
            return None
        params[link.param] = links.as_text(value)
    return "?" + urlencode(params)


def init_shared() -> None:
    init({MODEL: DEFAULT_CHAT_MODEL, HUB_ID: ""}, MODEL_LINK)


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


def redraw(*keys: str) -> None:
    """Assign the held values of `keys` again, just before their widgets are drawn.

    A widget that a run left out (the page stopped above it: no files uploaded yet) is drawn afresh
    by the browser in the next run, showing its default (a number input's minimum) while the server
    holds the kept value; the next click then sends that default back. `restore` puts the value back
    at the top of the run, but in Streamlit 1.67 only an assignment made after the run's first widgets
    reaches the browser, so a section drawn below widgets that can stop the page calls this.
    """
    ss = st.session_state
    for k in keys:
        if k in ss:
            ss[k] = ss[k]


def redraw_rest() -> None:
    """`redraw` every kept key whose widget this run has not drawn yet.

    Called below a point where earlier runs may have stopped (no documents yet, nothing indexed), so
    that the sections drawn for the first time show the values the server holds, not their widgets'
    defaults: an empty prompt template, a top-k of 1, which the browser then sends back with the
    next click. A key whose widget this run already drew cannot be assigned, and needs nothing. (A
    key a section sets only when it first runs calls `redraw` itself; a button's key must never be
    assigned, so this does not guess at keys outside `init`'s.)"""
    from streamlit.errors import StreamlitAPIException

    ss = st.session_state
    for k in sorted(ss.get(KEPT_KEYS, ())):
        if k in ss:
            try:
                ss[k] = ss[k]
            except StreamlitAPIException:  # drawn already in this run
                pass


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


def labels(options, label) -> Callable[[Any], str]:
    """A widget's `format_func` that holds only the labels of `options`, made now by `label(option)`.

    Streamlit keeps every widget's format_func in the session's state for as long as it keeps the
    session, which is minutes after its tab closed (so that a reconnecting tab finds its widgets).
    A lambda over an analysis (attention maps, a logit lens) would keep the analysis' tensors alive
    with it, out of the memory budget's reach: the budget drops the entry, and the memory stays.

    >>> f = labels([1, 2], lambda i: f"head {i}")
    >>> f(2), f(3)
    ('head 2', '3')
    """
    table = {o: str(label(o)) for o in options}
    return lambda o: table.get(o, str(o))


def record_action(key: str, how: str, pick_key: str | None = None) -> None:
    """A button's callback: st.session_state[key] = (how, the value of `pick_key` now, or None), for the
    script to apply on the run the click starts.

    Callbacks live here, in a module, rather than in a page script: a function defined in a page keeps
    that run's whole namespace alive through its globals, and Streamlit keeps the callback with the
    widget (see `labels`)."""
    st.session_state[key] = (how, st.session_state.get(pick_key) if pick_key else None)
