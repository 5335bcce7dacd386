"""The server side of many sessions: start-up, which sessions are alive, and waits shown in the page.

app.py calls `begin()` first on every run. The first call of the process imports every heavy library
(playground.startup.warm, under its lock, while other first sessions wait) and tells the core who
is asking (the session id of the script thread) and how a wait in the work queue is shown
(`_show_wait`: "waiting: 2 ahead of you", with a Cancel button). Every call notes the session as
seen and releases the memory kept by sessions that are gone (a closed or reloaded tab), as a timer
thread also does every `SWEEP_SECONDS`.

A session is alive while Streamlit's runtime holds it as active (its websocket is connected):
a reloaded tab is a new session, and the old one stops being active at once. Outside a running
server (AppTest) there is no runtime to ask; a session is alive there while its session state is.

What it leaves out: the status page's drawing (views/status.py) and each page's use of the
budget (components/held.py).
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from dataclasses import dataclass

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from playground import budget, jobs, startup
from playground.errors import JobCancelled

SWEEP_SECONDS = 5.0
CANCELLED = "_jobs_cancelled"  # set by a Cancel button's callback, read by the next run only


@dataclass
class Seen:
    first: float
    last: float
    page: str
    runs: int = 0


_sessions: dict[str, Seen] = {}
_states: dict[str, weakref.ref] = {}  # owner -> its session state (how AppTest sessions are known to be gone)
_lock = threading.Lock()
_started = False
_run = threading.local()  # this script run: the cancel it follows, the wait messages it shows


TOKEN = "_server_session_token"


def session_id() -> str:
    """The id of the session whose script runs on this thread ("" on other threads): Streamlit's session
    id and a token of the session state's own (AppTest gives every test the same session id)."""
    ctx = get_script_run_ctx(suppress_warning=True)
    if ctx is None:
        return ""
    state = ctx.session_state
    if TOKEN not in state:
        state[TOKEN] = uuid.uuid4().hex[:8]
    owner = f"{ctx.session_id}/{state[TOKEN]}"
    if owner not in _states:
        try:  # without a server (AppTest) a session lives as long as its session state
            _states[owner] = weakref.ref(getattr(state, "_state", state))
        except TypeError:
            pass
    return owner


def _runtime():
    from streamlit import runtime

    return runtime.get_instance() if runtime.exists() else None


def alive(session: str) -> bool:
    """Whether Streamlit still holds `session` as connected (always True without a server: AppTest)."""
    rt = _runtime()
    if rt is None:
        ref = _states.get(session)
        return ref is None or ref() is not None
    try:
        return bool(rt.is_active_session(session.split("/")[0]))
    except Exception:  # noqa: BLE001 - a runtime shutting down
        return False


def release_gone() -> list[str]:
    """Release what sessions that are gone kept; forget them. The sessions released."""
    gone = budget.server_budget().release_gone(alive)
    with _lock:
        for sid in [s for s in _sessions if not alive(s)]:
            _sessions.pop(sid, None)
            _states.pop(sid, None)
            if sid not in gone:
                gone.append(sid)
    if gone:
        budget.give_back()
    return gone


def sessions() -> dict[str, Seen]:
    """The sessions seen that are still alive."""
    with _lock:
        return {sid: Seen(s.first, s.last, s.page, s.runs) for sid, s in _sessions.items() if alive(sid)}


def _sweeper() -> None:
    while True:
        time.sleep(SWEEP_SECONDS)
        try:
            release_gone()
        except Exception:  # noqa: BLE001 - keep sweeping
            pass


def start() -> startup.Warmed:
    """Once per process (later calls return at once): imports, the core's hooks, the release timer."""
    global _started
    warmed = startup.warm()  # before any page runs: see playground/startup.py
    with _lock:
        if not _started:
            _started = True
            jobs.set_owner(session_id)
            jobs.set_reporter(_show_wait)
            threading.Thread(target=_sweeper, daemon=True, name="playground-release-sessions").start()
    return warmed


def begin(page: str = "") -> None:
    """Every run, before the page: start-up (once), this session seen, gone sessions released."""
    start()
    sid = session_id()
    now = time.monotonic()
    with _lock:
        seen = _sessions.setdefault(sid, Seen(now, now, page))
        seen.last, seen.page, seen.runs = now, page, seen.runs + 1
    budget.server_budget().touch(sid)
    _run.cancelled = st.session_state.pop(CANCELLED, None)
    _run.waits = {}
    release_gone()
    dropped = budget.server_budget().dropped(sid)
    if dropped:
        st.toast("To make room for another session, the server dropped what this one kept ("
                 + ", ".join(sorted(set(dropped))) + "); it is computed again when needed.", icon=":material/memory:")


def pages() -> list:
    """The pages for whoever runs the server (the "Server" heading of the navigation)."""
    from components.nav import ROOT

    return [st.Page(str(ROOT / "views/status.py"), title="Server status", icon=":material/monitor_heart:")]


def _cancel(what: str) -> None:
    st.session_state[CANCELLED] = what


def _show_wait(ticket: jobs.Ticket) -> None:
    """The waiting callback of the work queue: a message and a Cancel button where the page is drawing."""
    if get_script_run_ctx(suppress_warning=True) is None:
        return  # a worker thread (Compare's columns show their own waits)
    waits = getattr(_run, "waits", None)
    if waits is None:
        waits = _run.waits = {}
    label = f"{ticket.what} on {ticket.model}"
    cancelled = getattr(_run, "cancelled", None)
    if cancelled is not None:
        _run.cancelled = None
        raise JobCancelled(f"You cancelled {cancelled}: it left the queue. It is queued again the next time the "
                           "page runs (change something on it, or press R).")
    if ticket.state == "running":
        shown = waits.pop(ticket.id, None)
        if shown is not None:
            shown[0].empty()
        return
    if ticket.id not in waits:
        holder = st.empty()
        box = holder.container(border=True)
        message = box.empty()
        box.button("Cancel", key=f"jobs_cancel_{ticket.id}", on_click=_cancel, args=(label,),
                   help="Leave the queue; nothing of this request runs.")
        waits[ticket.id] = (holder, message)
    ahead = ticket.ahead
    running = len(jobs.QUEUE.snapshot()[0])
    waits[ticket.id][1].markdown(
        f":material/hourglass_top: **Waiting: {ahead} ahead of you** in the server's queue for {label} "
        f"({running} running, at most {jobs.QUEUE.bound} at once; waited {ticket.waited:.0f} s).")
