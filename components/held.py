"""What a page keeps between runs, in the server's one memory budget (playground.budget) under its session.

A page keeps large results here instead of in st.session_state: `get(key)` gives the kept value or
None (never made, or dropped to make room for another session: compute it again), `reserve(key,
nbytes, what, lm)` makes room before the work and refuses with the numbers (a BudgetError the
page shows), `fill` keeps the result. `logits_cache` is the Next token page's cache of
distributions, which grows one distribution at a time within the budget.

What it leaves out: small values (picks, texts, walks) stay in st.session_state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from components.server import session_id
from playground import budget as core


def _budget() -> core.Budget:
    return core.server_budget()


def get(key: str) -> Any | None:
    return _budget().get(session_id(), key)


def drop(key: str) -> None:
    _budget().drop(session_id(), key)


def reserve(key: str, nbytes: int, what: str, lm=None) -> core.Reservation:
    """Room for `nbytes` under this session's `key`; BudgetError (with the numbers) when it cannot fit."""
    spec = getattr(lm, "spec", None)
    return _budget().reserve(session_id(), key, nbytes, what, engine=str(getattr(lm, "engine", "") or ""),
                             model=str(getattr(spec, "id", "") or ""))


def size_of(value: Any) -> int:
    """Bytes of the tensors a kept result holds."""
    return core.entries_bytes([value])


def logits_cache(key: str, make: Callable[..., Any], what: str = "next-token logits"):
    """This session's cache of distributions under `key`: made by `make(admit=...)` when there is none
    (or it was dropped); each new distribution is admitted against the budget as the cache grows."""
    sid, b = session_id(), _budget()
    cache = b.get(sid, key)
    if cache is None:
        cache = make(admit=lambda n: b.resize(sid, key, n))
        b.put(sid, key, cache, 0, what, engine="", model="")
    return cache
