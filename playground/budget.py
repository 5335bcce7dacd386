"""One memory budget for the whole server: what every session keeps, counted and bounded together.

A page that keeps something large between runs (the Attention page's maps, the Next token page's
logits, the logit lens' states) keeps it here, under its session's id and a key, with its size in
bytes, instead of in its session state. The budget holds the object itself, so dropping an entry
frees it (nothing else refers to it once the run that made it is over), and a page that finds its
entry gone recomputes it.

- `reserve(owner, key, nbytes, what)` makes room *before* the work that fills it: the entries of
  the other sessions are dropped, least recently used session first (and, within a session, its
  least recently used entry first), until the request fits. A request that cannot fit even then
  is refused with the numbers, a `BudgetError`:
  "these maps need 2.1 GiB; 1.4 GiB is free for them now (...)". The requesting session's own
  other entries are never dropped for it: one session's two models would take turns evicting
  each other on every run.
- `put` is `reserve` and fill in one; `get` touches the entry (and its session) as used.
- `release(owner)` drops a session's entries at once (a closed or reloaded tab);
  `release_gone(alive)` drops those of every session `alive(owner)` says is gone.
- `dropped(owner)` says what was dropped to make room for another session, once, so the page
  can say why it computes again.

The whole budget is `PLAYGROUND_MEMORY_BUDGET` (bytes, or "6GiB", "800MB", "25%" of the machine's
memory); by default a quarter of the machine's memory (`default_bytes`).

What it leaves out: memory that is not kept between runs (a forward pass' activations while it
runs, the eager attention of one layer), the models' weights (shared by every session, bounded by
the loaders' caches), and Streamlit's own session state; the README states the margin. It knows
nothing of Streamlit: the router tells it which sessions are alive (components/server.py).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from playground.errors import BudgetError, InputError

ENV = "PLAYGROUND_MEMORY_BUDGET"
DEFAULT_SHARE = 0.25  # of the machine's memory, when ENV is not set
MIN_BYTES = 64 << 20

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": 1000**2, "mb": 1000**2, "mib": 1 << 20,
          "g": 1000**3, "gb": 1000**3, "gib": 1 << 30, "t": 1000**4, "tb": 1000**4, "tib": 1 << 40}


def machine_bytes() -> int:
    """The machine's physical memory."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001 - psutil missing or refused: ask the OS
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def default_bytes() -> int:
    """A quarter of the machine's memory: 6 GiB on a 24 GiB machine."""
    return max(int(machine_bytes() * DEFAULT_SHARE), MIN_BYTES)


def parse_size(text: str) -> int:
    """Bytes from "6GiB", "6 G", "800MB", "25%" (of the machine's memory) or a plain number.

    >>> parse_size("1.5GiB")
    1610612736
    """
    t = str(text).strip().lower().replace("_", "").replace(",", "")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(%|[a-z]*)", t)
    if not m or (m.group(2) not in _UNITS and m.group(2) != "%"):
        raise InputError(f"{ENV} is {text!r}; give bytes, a size such as '6GiB' or '800MB', or a share such as '25%'.")
    value = float(m.group(1))
    n = int(machine_bytes() * value / 100) if m.group(2) == "%" else int(value * _UNITS[m.group(2)])
    if n < MIN_BYTES:
        raise InputError(f"{ENV} is {text!r} ({size(n)}); the budget must be at least {size(MIN_BYTES)}.")
    return n


def configured_bytes(env: dict[str, str] | None = None) -> int:
    """The budget the environment asks for, else `default_bytes()`."""
    raw = (env if env is not None else os.environ).get(ENV, "").strip()
    return parse_size(raw) if raw else default_bytes()


def size(n: float) -> str:
    """'2.1 GiB', '340 MiB', '12 KiB'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:,.1f} {unit}" if unit == "GiB" else f"{n / scale:,.0f} {unit}"
    return f"{int(n):,} B"


@dataclass
class _Entry:
    owner: str
    key: str
    what: str
    engine: str
    model: str
    nbytes: int
    value: Any = None
    pending: bool = True  # reserved, being computed: counted, never dropped
    last_used: float = 0.0


@dataclass(frozen=True)
class Usage:
    """One kept entry, as the status view shows it."""

    owner: str
    key: str
    what: str
    engine: str
    model: str
    nbytes: int
    pending: bool
    idle_seconds: float


@dataclass(frozen=True)
class Snapshot:
    total: int
    used: int
    entries: tuple[Usage, ...]

    @property
    def free(self) -> int:
        return max(self.total - self.used, 0)

    def by(self, field: str) -> dict[str, int]:
        """Bytes per owner, engine or model."""
        out: dict[str, int] = {}
        for e in self.entries:
            out[getattr(e, field)] = out.get(getattr(e, field), 0) + e.nbytes
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


class Reservation:
    """Room made for one entry; `fill(value)` keeps the value in it. Leaving the `with` block
    without filling it (the work failed or was stopped) gives the room back."""

    def __init__(self, budget: "Budget", entry: _Entry) -> None:
        self.budget, self.entry, self.filled = budget, entry, False

    def fill(self, value: Any, nbytes: int | None = None) -> Any:
        self.budget._fill(self.entry, value, nbytes)
        self.filled = True
        return value

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc) -> None:
        if not self.filled:
            self.budget._forget(self.entry)


class Budget:
    """The server's one budget (thread-safe): entries by (owner, key), bounded by `total` bytes together."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = int(total)
        self._clock = clock
        self._lock = threading.RLock()
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._seen: dict[str, float] = {}  # owner -> when it last ran or used an entry
        self._dropped: dict[str, list[str]] = {}  # owner -> what was dropped for another session

    # --- reading ---------------------------------------------------------------------------

    def get(self, owner: str, key: str) -> Any | None:
        """The kept value, or None (never kept, dropped, or still being computed)."""
        with self._lock:
            e = self._entries.get((owner, key))
            if e is None or e.pending:
                return None
            e.last_used = self._seen[owner] = self._clock()
            return e.value

    def touch(self, owner: str) -> None:
        """`owner` ran: it counts as recently used."""
        with self._lock:
            self._seen[owner] = self._clock()

    @property
    def used(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def used_by(self, owner: str) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values() if e.owner == owner)

    def free_for(self, owner: str, key: str = "") -> int:
        """What `owner` could get now if every other session's kept entries were dropped."""
        with self._lock:
            held = sum(e.nbytes for e in self._entries.values()
                       if (e.owner == owner and e.key != key) or e.pending)
            return max(self.total - held, 0)

    def owners(self) -> list[str]:
        with self._lock:
            return sorted({e.owner for e in self._entries.values()})

    def snapshot(self) -> Snapshot:
        with self._lock:
            now = self._clock()
            entries = tuple(Usage(e.owner, e.key, e.what, e.engine, e.model, e.nbytes, e.pending, now - e.last_used)
                            for e in self._entries.values())
            return Snapshot(self.total, sum(u.nbytes for u in entries), entries)

    def dropped(self, owner: str) -> list[str]:
        """What of `owner`'s was dropped to make room for another session since the last call."""
        with self._lock:
            return self._dropped.pop(owner, [])

    # --- making room -----------------------------------------------------------------------

    def reserve(self, owner: str, key: str, nbytes: int, what: str, engine: str = "", model: str = "") -> Reservation:
        """Room for `nbytes` under (owner, key), dropping other sessions' entries (least recently used
        first) if needed; BudgetError with the numbers when even that is not enough. An entry already
        under (owner, key) is replaced."""
        nbytes = max(int(nbytes), 0)
        with self._lock:
            self._entries.pop((owner, key), None)
            fits = self.free_for(owner, key)
            if nbytes > fits:
                raise BudgetError(self._refusal(owner, key, nbytes, what, fits))
            for e in self._victims(owner):
                if self.total - self.used >= nbytes:
                    break
                self._drop(e, for_owner=owner)
            now = self._clock()
            entry = _Entry(owner, key, what, engine, model, nbytes, last_used=now)
            self._entries[(owner, key)] = entry
            self._seen[owner] = now
            return Reservation(self, entry)

    def put(self, owner: str, key: str, value: Any, nbytes: int, what: str, engine: str = "", model: str = "") -> Any:
        """Keep `value` (already made) under (owner, key): `reserve` then fill."""
        with self.reserve(owner, key, nbytes, what, engine, model) as r:
            return r.fill(value)

    def resize(self, owner: str, key: str, nbytes: int) -> None:
        """An entry that grows (a cache of logits): make room for its new size as `reserve` does.

        BudgetError when it does not fit (the entry keeps its old size); InputError if the entry is
        gone (dropped for another session meanwhile)."""
        with self._lock:
            e = self._entries.get((owner, key))
            if e is None:
                raise InputError(f"Nothing is kept under {key!r} for this session any more.")
            grow = int(nbytes) - e.nbytes
            if grow > 0:
                fits = self.free_for(owner, key)
                if nbytes > fits:
                    raise BudgetError(self._refusal(owner, key, nbytes, e.what, fits))
                for v in self._victims(owner):
                    if self.total - self.used >= grow:
                        break
                    self._drop(v, for_owner=owner)
            e.nbytes = int(nbytes)
            e.last_used = self._seen[owner] = self._clock()

    def _victims(self, owner: str) -> list[_Entry]:
        others = [e for e in self._entries.values() if e.owner != owner and not e.pending]
        return sorted(others, key=lambda e: (self._seen.get(e.owner, 0.0), e.last_used))

    def _refusal(self, owner: str, key: str, nbytes: int, what: str, fits: int) -> str:
        own = sum(e.nbytes for e in self._entries.values() if e.owner == owner and e.key != key)
        busy = sum(e.nbytes for e in self._entries.values() if e.pending and e.owner != owner)
        parts = [f"the server's memory budget is {size(self.total)}"]
        if own:
            parts.append(f"this session keeps {size(own)} of it for its other views")
        if busy:
            parts.append(f"{size(busy)} is being computed for other sessions right now")
        return (f"{what[:1].upper()}{what[1:]} need {size(nbytes)}; {size(fits)} is free for them now "
                f"({'; '.join(parts)}). Shorten the text or close the other view, try again in a moment, or ask "
                f"whoever runs the server to raise {ENV}.")

    # --- letting go --------------------------------------------------------------------------

    def _fill(self, entry: _Entry, value: Any, nbytes: int | None) -> None:
        with self._lock:
            if self._entries.get((entry.owner, entry.key)) is not entry:  # released meanwhile (the tab closed)
                return
            entry.value, entry.pending = value, False
            if nbytes is not None:
                entry.nbytes = int(nbytes)
            entry.last_used = self._clock()

    def _forget(self, entry: _Entry) -> None:
        with self._lock:
            if self._entries.get((entry.owner, entry.key)) is entry:
                del self._entries[(entry.owner, entry.key)]

    def _drop(self, e: _Entry, for_owner: str | None = None) -> None:
        del self._entries[(e.owner, e.key)]
        if for_owner is not None:
            self._dropped.setdefault(e.owner, []).append(e.what)

    def drop(self, owner: str, key: str) -> bool:
        with self._lock:
            return self._entries.pop((owner, key), None) is not None

    def release(self, owner: str) -> int:
        """Drop every entry of `owner` (its tab closed); the bytes freed."""
        with self._lock:
            gone = [e for e in self._entries.values() if e.owner == owner]
            for e in gone:
                del self._entries[(e.owner, e.key)]
            self._seen.pop(owner, None)
            self._dropped.pop(owner, None)
            return sum(e.nbytes for e in gone)

    def release_gone(self, alive: Callable[[str], bool]) -> list[str]:
        """Release every owner `alive(owner)` says is gone; the owners released."""
        with self._lock:
            owners = {e.owner for e in self._entries.values()} | set(self._seen)
        gone = [o for o in owners if not alive(o)]
        for o in gone:
            self.release(o)
        return gone

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._seen.clear()
            self._dropped.clear()


_budget: Budget | None = None
_budget_lock = threading.Lock()


def server_budget() -> Budget:
    """The process' one budget, sized from the environment on first use."""
    global _budget
    if _budget is None:
        with _budget_lock:
            if _budget is None:
                _budget = Budget(configured_bytes())
    return _budget


def give_back() -> bool:
    """Hand the memory freed since the last call back to the system, where the C library keeps it.

    A released session's maps are large tensors that go back at once, but a pass over a long text
    also leaves hundreds of MiB of freed working memory in the C library's heaps (each thread has its
    own), which glibc keeps for reuse and which the process' RSS goes on counting. `malloc_trim(0)`
    returns the free pages of every heap. False where there is no glibc (macOS, musl): nothing to do.
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()  # a released value in a reference cycle is freed only by the collector
    global _trim
    if _trim is None:
        try:
            _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _trim = False
    if not _trim:
        return False
    _trim(0)
    return True


_trim = None


def entries_bytes(values: Iterable[Any]) -> int:
    """Bytes of the tensors in `values` (and in their fields, one level down): a kept result's size."""
    import dataclasses

    import torch

    total = 0
    for v in values:
        if torch.is_tensor(v):
            total += v.numel() * v.element_size()
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            total += entries_bytes(getattr(v, f.name) for f in dataclasses.fields(v))
    return total
