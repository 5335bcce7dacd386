"""Session-state keys shared across pages, and URL <-> session-state helpers.

Each page names its own keys once, in a `K` class at its top, prefixed with the page's name;
the keys every page shares are here. `init(defaults, links)` sets a key only when it is missing
(first from the URL's query parameters, each checked by `playground.links` against what it feeds,
so a link reproduces a view and an odd link value is changed and said), and `to_url(links)` writes
the current values back to the URL, leaving out a text too long for a link.
"""

from __future__ import annotations

import contextlib
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
UNDRAWN = "_undrawn_keys"  # kept keys whose widgets the previous run did not draw (it stopped above them)


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


def remember(drew_all: bool = True) -> None:
    """Copy the value of every key pages initialised (app.py calls this at the end of every run,
    even one cut short by st.stop or st.rerun), and note which of them this run drew no widget for
    (`drew_all`: False for a run the next one cut short; the note of the last whole run stays).

    Streamlit drops the values of widgets that were not drawn after this, once the run is over; a
    key missing already here was deleted by the page itself (a message shown once, a request
    handled), and is not brought back.
    """
    ss, lock = _state_after_stop()
    with lock:
        kept = ss[KEPT_KEYS] if KEPT_KEYS in ss else ()
        ss[KEPT_VALUES] = {k: ss[k] for k in kept if k in ss}
        if drew_all:  # a run cut short by the next one drew only a part of the page: it says nothing of the rest
            drawn = _drawn_this_run()
            ss[UNDRAWN] = sorted(k for k in kept if k not in drawn) if drawn is not None else None


def _state_after_stop():
    """The session's state and its lock, readable in a run that st.stop() ended.

    Once a stop was asked for, Streamlit (1.67) raises StopException again at every access of
    `st.session_state`, so the end of a stopped run could not read or write it: what the run
    changed was not kept, nor which widgets it left out. Its inner state has no such check."""
    from streamlit.runtime.state.session_state_proxy import get_session_state

    safe = get_session_state()
    inner, lock = getattr(safe, "_state", None), getattr(safe, "_lock", None)
    if inner is None or lock is None:  # another Streamlit: the guarded state
        return st.session_state, contextlib.nullcontext()
    return inner, lock


def _drawn_this_run() -> frozenset[str] | None:
    """The keys of the widgets this run drew; None if this Streamlit does not say."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    keys = getattr(getattr(ctx, "shared", None), "widget_user_keys_this_run", None)
    return keys.snapshot() if keys is not None else None


def redraw(*keys: str) -> None:
    """Assign the held values of `keys` again, before their widgets are drawn in this run.

    A widget that the last run left out (the page stopped above it: no files uploaded yet) is drawn
    afresh by the browser, showing its default (a number input's minimum) unless the run that draws
    it assigns the value; the next click would then send that default back. Streamlit keeps such a
    widget's value on the server (it does not clear a stopped run's widgets), so `restore` finds
    nothing to put back. app.py redraws every kept key a run left out (`redraw_undrawn`); a key that
    a section sets itself when it first runs, outside `init`, calls this.
    """
    ss = st.session_state
    for k in keys:
        if k in ss:
            ss[k] = ss[k]


def redraw_rest(keys=None) -> None:
    """`redraw` `keys` (by default every kept key) whose widgets this run has not drawn yet.

    A key whose widget this run already drew cannot be assigned, and needs nothing. Only keys from
    `init` and `keep` are meant: a button's key must never be assigned."""
    from streamlit.errors import StreamlitAPIException

    ss = st.session_state
    for k in sorted(ss.get(KEPT_KEYS, ()) if keys is None else keys):
        if k in ss:
            try:
                ss[k] = ss[k]
            except StreamlitAPIException:  # drawn already in this run
                pass


def restore(page: str) -> None:
    """Put back the values Streamlit dropped (app.py calls this before the page runs).

    Streamlit deletes a widget's value at the end of any run that did not draw the widget: every
    run of another page, and a run cut short by a click before the widget was drawn (not a run that
    st.stop ended: `redraw_undrawn` is for those). Without this,
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


def redraw_undrawn() -> None:
    """`redraw` the kept keys whose widgets the previous run left out.

    app.py calls this after the sidebar's widgets and before the page, for every page. A run that
    stopped above a section (no documents yet, nothing indexed, no upload) drew none of its
    widgets; Streamlit keeps their values, but when they are drawn again the browser shows their
    defaults (a number input's minimum), not the values the server holds, and sends those back with
    the next click. Only these keys are assigned: assigning the value of a widget the browser still
    shows would overwrite what is being typed into it. (If this Streamlit does not say which
    widgets a run drew, every kept key is.)
    """
    ss = st.session_state
    redraw_rest(ss.get(UNDRAWN, ()))


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
