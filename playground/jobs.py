"""The work queue for the local CPU engines: forward passes and generations take turns, first come first served.

Every model call on a local engine (transformers, llama.cpp) from any session goes through
`turn(lm, what)`, a context manager around the heavy call: at most `bound` run at once, the rest
wait in the order they came (FIFO, so no session starves), and a waiting request can be cancelled
(its `cancel` event, or an exception raised by the waiting callback, e.g. Streamlit stopping the
script when the person presses Cancel) and then leaves the queue at once. Remote endpoints
(engine "remote") run on their own server and never wait here.

    with jobs.turn(lm, "attention maps"):
        out = lm.model(input_ids=ids)

While it waits, `turn` calls the waiting callback (`on_wait`, else the one the app installed with
`set_reporter`) every `POLL` seconds with the ticket, whose `ahead` says how many requests are in
front of it, and once more when its turn comes (`state` "running"). A turn inside a turn on the same thread does not queue again (a pass inside a
generation would otherwise wait for itself). `Ticket`s are made on the thread that asks (the page's
script thread), so the session that owns them is known even when the work then runs on another.

The bound is `PLAYGROUND_JOBS` (default `DEFAULT_BOUND`, measured in docs/bench-sessions.md: on 2
cores, 4 at once gave the best total throughput of 1 to 4, 2.2x that of one at a time).

What it leaves out: priorities, time slices (a running job runs to its end), the embedders and the
vector store (RAG indexing and search take their own locks), and work in other processes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from playground.errors import InputError, JobCancelled

ENV = "PLAYGROUND_JOBS"
DEFAULT_BOUND = 4  # docs/bench-sessions.md: the best total throughput of 1, 2, 3, 4 at once on 2 cores
MAX_BOUND = 64
LOCAL_ENGINES = frozenset({"transformers", "llama.cpp"})
POLL = 0.25  # seconds between waiting callbacks

_ids = itertools.count(1)


@dataclass(eq=False)
class Ticket:
    """One request for a turn: who asked, for what, and where it stands."""

    engine: str
    model: str
    what: str
    owner: str = ""  # the session that asked ("" outside the app)
    id: int = field(default_factory=lambda: next(_ids))
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    state: str = "new"  # new | waiting | running | done | cancelled
    ahead: int = 0  # requests in front of it while it waits
    queue: "WorkQueue | None" = None

    @property
    def waited(self) -> float:
        return (self.started or time.monotonic()) - self.created


class WorkQueue:
    """At most `bound` tickets running; the others wait in arrival order."""

    def __init__(self, bound: int = DEFAULT_BOUND) -> None:
        self._cond = threading.Condition()
        self._bound = check_bound(bound)
        self._waiting: deque[Ticket] = deque()
        self._running: list[Ticket] = []
        self.finished = 0

    @property
    def bound(self) -> int:
        return self._bound

    @bound.setter
    def bound(self, n: int) -> None:
        with self._cond:
            self._bound = check_bound(n)
            self._cond.notify_all()

    def _refresh(self) -> None:
        for i, t in enumerate(self._waiting):
            t.ahead = i

    @contextlib.contextmanager
    def run(self, ticket: Ticket, cancel: threading.Event | None = None,
            on_wait: Callable[[Ticket], None] | None = None) -> Iterator[Ticket]:
        """Wait for `ticket`'s turn, hold it for the `with` block, then hand it on.

        Raises JobCancelled if `cancel` is set while waiting; any exception from `on_wait` (called every
        POLL seconds while waiting) also takes the ticket out of the queue and propagates.
        """
        with self._cond:
            ticket.queue, ticket.state = self, "waiting"
            self._waiting.append(ticket)
            self._refresh()
        shown = False
        try:
            while True:
                with self._cond:
                    if cancel is not None and cancel.is_set():
                        raise JobCancelled(f"Cancelled while waiting for {ticket.what} on {ticket.model}.")
                    if self._waiting[0] is ticket and len(self._running) < self._bound:
                        self._waiting.popleft()
                        self._refresh()
                        self._running.append(ticket)
                        ticket.state, ticket.started = "running", time.monotonic()
                        self._cond.notify_all()
                        break
                if on_wait is not None:
                    shown = True
                    on_wait(ticket)
                with self._cond:
                    if ticket.state == "waiting" and not (self._waiting[0] is ticket and len(self._running) < self._bound):
                        self._cond.wait(POLL)
        except BaseException:
            with self._cond:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                    self._refresh()
                ticket.state = "cancelled"
                self._cond.notify_all()
            raise
        try:
            if shown and on_wait is not None:
                on_wait(ticket)  # once more, now running: the waiting message can go
            yield ticket
        finally:
            with self._cond:
                if ticket in self._running:
                    self._running.remove(ticket)
                ticket.state = "done"
                self.finished += 1
                self._cond.notify_all()

    def snapshot(self) -> tuple[tuple[Ticket, ...], tuple[Ticket, ...]]:
        """(running, waiting in order)."""
        with self._cond:
            return tuple(self._running), tuple(self._waiting)


def check_bound(n) -> int:
    try:
        value = int(n)
    except (TypeError, ValueError):
        raise InputError(f"{ENV} is {n!r}; give how many model calls may run at once, 1 to {MAX_BOUND}.") from None
    if not 1 <= value <= MAX_BOUND:
        raise InputError(f"{ENV} is {value}; give how many model calls may run at once, 1 to {MAX_BOUND}.")
    return value


def configured_bound(env: dict[str, str] | None = None) -> int:
    raw = (env if env is not None else os.environ).get(ENV, "").strip()
    return check_bound(raw) if raw else DEFAULT_BOUND


QUEUE = WorkQueue(configured_bound())

# Set by the app (components/server.py): who is asking, and how a wait is shown. Both are called on
# the asking thread; outside the app they are absent and nothing is shown.
_owner: Callable[[], str] = lambda: ""  # noqa: E731
_reporter: Callable[[Ticket], None] | None = None
_held = threading.local()  # the turns this thread holds (a turn inside a turn does not queue)


def set_owner(fn: Callable[[], str]) -> None:
    global _owner
    _owner = fn


def set_reporter(fn: Callable[[Ticket], None] | None) -> None:
    global _reporter
    _reporter = fn


def _engine(lm) -> str:
    return str(getattr(lm, "engine", "transformers"))


def _model(lm) -> str:
    spec = getattr(lm, "spec", None)
    return str(getattr(spec, "id", "") or getattr(lm, "id", "") or "?")


def is_queued(lm) -> bool:
    """Whether calls to `lm` wait in the local queue (transformers and llama.cpp do; remote does not)."""
    return _engine(lm) in LOCAL_ENGINES


def ticket(lm, what: str) -> Ticket:
    """A ticket for `lm`, owned by the session asking now (call it on the asking thread)."""
    try:
        owner = _owner() or ""
    except Exception:  # noqa: BLE001 - no session: outside the app
        owner = ""
    return Ticket(_engine(lm), _model(lm), what, owner)


@contextlib.contextmanager
def turn(lm, what: str, cancel: threading.Event | None = None, on_wait: Callable[[Ticket], None] | None = None,
         queue: WorkQueue | None = None, ticket_: Ticket | None = None) -> Iterator[Ticket | None]:
    """Hold a turn of the local work queue around a heavy call on `lm` (no wait for a remote model,
    nor for a turn inside a turn on this thread)."""
    if not is_queued(lm) or getattr(_held, "depth", 0):
        yield None
        return
    t = ticket_ or ticket(lm, what)
    with (queue or QUEUE).run(t, cancel, on_wait or _reporter):
        _held.depth = getattr(_held, "depth", 0) + 1
        try:
            yield t
        finally:
            _held.depth -= 1
