"""The Server status page's sections: sessions, the work queue, the memory budget, the process.

views/status.py calls them in order inside one fragment that redraws itself every few seconds.
What it leaves out: changing anything (the budget and the bound are set where the server starts).
"""

from __future__ import annotations

import os
import time

import streamlit as st

from components import server
from components.format import human_bytes
from playground import budget, finetune, jobs, startup


def _short(session: str) -> str:
    return session[:8] if session else "(none)"


def intro() -> None:
    st.title("Server status")
    st.write(
        "For whoever runs the demo: the sessions connected to this server, the model calls waiting and running in "
        "its work queue, and the memory the sessions keep against the server's one budget."
    )
    with st.expander("How to read this"):
        st.markdown(
            f"- **Memory kept** is what pages hold between runs (attention maps, next-token logits, logit-lens "
            f"states), counted against one budget for every session: `{budget.ENV}` (now "
            f"{budget.size(budget.server_budget().total)}). When a new entry does not fit, the least recently used "
            "other session's entries are dropped first; that session computes them again when it comes back. A "
            "request that cannot fit even then is refused with the numbers.\n"
            f"- **The queue**: forward passes and generations on the local engines (transformers, llama.cpp) run at "
            f"most `{jobs.ENV}` = {jobs.QUEUE.bound} at a time, first come first served; models on a remote "
            "endpoint do not wait here. A waiting session sees its place and a Cancel button.\n"
            "- **The process' memory** (RSS) is more than the kept memory: it holds the loaded models, Python and "
            "the work running right now.\n"
            "- A closed or reloaded tab's session disappears from the list within a few seconds, and what it kept "
            "is released."
        )


def overview(me: str) -> None:
    snap = budget.server_budget().snapshot()
    running, waiting = jobs.QUEUE.snapshot()
    alive = server.sessions()
    c1, c2, c3, c4, c5 = st.columns(5)
    c1.metric("Sessions alive", f"{len(alive):,}")
    c2.metric("Jobs running", f"{len(running)} of {jobs.QUEUE.bound}", help=f"At most {jobs.QUEUE.bound} at once ({jobs.ENV}).")
    c3.metric("Jobs waiting", f"{len(waiting):,}", help=f"{jobs.QUEUE.finished:,} finished since the server started.")
    c4.metric("Memory kept", budget.size(snap.used),
              help=f"{snap.used / max(snap.total, 1):.0%} of the budget, {budget.size(snap.total)} ({budget.ENV}).")
    c5.metric("Process memory (RSS)", human_bytes(_rss()), help="Everything this server process holds: models included.")
    st.progress(min(snap.used / max(snap.total, 1), 1.0), text=f"Budget used: {budget.size(snap.used)} of {budget.size(snap.total)}")
    st.caption(f"Memory budget: {budget.size(snap.total)} for every session's kept results ({budget.ENV}).")


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except Exception:  # noqa: BLE001
        return 0


def session_table(me: str) -> None:
    st.subheader("Sessions")
    snap = budget.server_budget().snapshot()
    kept = snap.by("owner")
    running, waiting = jobs.QUEUE.snapshot()
    now = time.monotonic()
    rows = []
    for sid, seen in sorted(server.sessions().items(), key=lambda kv: -kv[1].last):
        rows.append({"session": _short(sid) + ("  (you)" if sid == me else ""), "page": seen.page or "home",
                     "last run": f"{now - seen.last:,.0f} s ago", "runs": seen.runs,
                     "memory kept": budget.size(kept.get(sid, 0)),
                     "jobs running": sum(t.owner == sid for t in running),
                     "jobs waiting": sum(t.owner == sid for t in waiting)})
    st.dataframe(rows, hide_index=True, key="status_sessions")


def job_table() -> None:
    st.subheader("Work queue")
    running, waiting = jobs.QUEUE.snapshot()
    rows = [{"state": "running", "place": "", "engine": t.engine, "model": t.model, "what": t.what,
             "session": _short(t.owner), "waited": f"{t.waited:.1f} s",
             "running for": f"{time.monotonic() - (t.started or time.monotonic()):.1f} s"} for t in running]
    rows += [{"state": "waiting", "place": f"{t.ahead} ahead", "engine": t.engine, "model": t.model, "what": t.what,
              "session": _short(t.owner), "waited": f"{t.waited:.1f} s", "running for": ""} for t in waiting]
    if rows:
        st.dataframe(rows, hide_index=True, key="status_jobs")
    else:
        st.caption(f"Nothing running or waiting. At most {jobs.QUEUE.bound} model call(s) run at once ({jobs.ENV}).")
    training = finetune.running()  # not a queued job: its own niced process, one on this machine at a time
    if training is not None:
        who = f"the run {training!r}" if training != "another app process" else "a run started by another app process"
        st.caption(f"Fine-tune: {who} is training in a process of its own (one training at a time on this machine, "
                   "outside this queue and this budget; the Fine-tune page states its memory).")


def memory_tables() -> None:
    st.subheader("Memory kept, against the budget")
    snap = budget.server_budget().snapshot()
    if not snap.entries:
        st.caption(f"No session keeps anything now; the budget is {budget.size(snap.total)} ({budget.ENV}).")
        return
    c1, c2 = st.columns(2)
    c1.markdown("**Per engine**")
    c1.dataframe([{"engine": k or "(any)", "kept": budget.size(v), "share of the budget": f"{v / snap.total:.0%}"}
                  for k, v in snap.by("engine").items()], hide_index=True, key="status_engines")
    c2.markdown("**Per model**")
    c2.dataframe([{"model": k or "(several)", "kept": budget.size(v)} for k, v in snap.by("model").items()],
                 hide_index=True, key="status_models")
    st.markdown("**Every entry**")
    st.dataframe([{"session": _short(e.owner), "what": e.what, "model": e.model, "engine": e.engine,
                   "bytes": e.nbytes, "kept": budget.size(e.nbytes), "state": "being computed" if e.pending else "kept",
                   "unused for": f"{e.idle_seconds:,.0f} s"}
                  for e in sorted(snap.entries, key=lambda e: -e.nbytes)], hide_index=True, key="status_entries")


def start_up() -> None:
    w = startup.warm()
    st.caption(f"Start-up: {len(w.imported)} libraries imported in {w.seconds:.1f} s before the first page ran."
               + (f" Not installed: {', '.join(m.split(':')[0] for m in w.missing)}." if w.missing else ""))
