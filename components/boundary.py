"""The router's error boundary: an exception a page did not catch is shown as a message, never a traceback.

A known error (`playground.errors.PlaygroundError`) keeps its own message, which says what to do.
Anything else says what happened, on which page, and what to try, with the details (the exception's
type, its message and the line it came from) folded in an expander; the full traceback goes to the
server's log, credentials masked. The session goes on: the router still remembers what was typed
(`state.remember` runs in its `finally`), and the next interaction reruns the page.

Streamlit's own control flow (`st.stop`, `st.rerun`, `st.switch_page`) raises exceptions of its own
that must reach Streamlit untouched: `is_control_flow` names them.

What it leaves out: errors a page catches itself (it shows them where they happen, next to the
widget that caused them).
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import streamlit as st

from playground.errors import PlaygroundError, describe
from playground.secrets import redact

log = logging.getLogger("playground.pages")
ROOT = Path(__file__).resolve().parent.parent


def _control_flow_types() -> tuple[type, ...]:
    found: list[type] = []
    for module, names in (("streamlit.runtime.scriptrunner_utils.exceptions", ("StopException", "RerunException")),
                          ("streamlit.runtime.scriptrunner.exceptions", ("StopException", "RerunException")),
                          ("streamlit.runtime.scriptrunner.script_runner", ("StopException", "RerunException"))):
        try:
            mod = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        found += [getattr(mod, n) for n in names if hasattr(mod, n)]
    return tuple(found)


CONTROL_FLOW = _control_flow_types()


def is_control_flow(exc: BaseException) -> bool:
    """Streamlit's st.stop / st.rerun / st.switch_page, which must pass through."""
    return isinstance(exc, CONTROL_FLOW) or type(exc).__name__ in ("StopException", "RerunException")


def where(exc: BaseException) -> str:
    """The innermost line of this project the exception passed through: 'views/rag.py:120 in main'."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f.filename.startswith(str(ROOT)) and "/.venv/" not in f.filename]
    f = (ours or frames or [None])[-1]
    if f is None:
        return "unknown"
    try:
        name = Path(f.filename).resolve().relative_to(ROOT)
    except ValueError:
        name = Path(f.filename).name
    return f"{name}:{f.lineno} in {f.name}"


def show(exc: BaseException, page: str) -> None:
    """Show `exc`, raised by `page` (its title), as a message with what to try."""
    if isinstance(exc, PlaygroundError):
        st.error(describe(exc), icon=":material/error:")
        return
    log.error("Unexpected error on the %s page:\n%s", page,
              redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))
    st.error(
        f"Something went wrong on the {page} page, and it stopped here ({type(exc).__name__}). "
        "What you typed is kept. Try again, undo the last change you made, or pick another model; "
        "other pages still work.",
        icon=":material/error:",
    )
    with st.expander("Details", expanded=False):
        st.markdown(f"**{type(exc).__name__}** at `{where(exc)}`")
        st.text(describe(exc)[:2000])
