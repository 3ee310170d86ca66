"""Waiting for a condition, shared by the test tiers and the benchmarks; and the record of
how much of its deadline each wait used, which the lab tier prints per module (a deadline
must stay at least three times what it measures: docs/design.md)."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

# (fraction of the deadline used, what waited) for this process's waits since the last take().
_used: list[tuple[float, str]] = []


def note(what: str, elapsed: float, timeout: float) -> None:
    """Record that a wait for `what` took `elapsed` of its `timeout`."""
    if timeout > 0:
        _used.append((elapsed / timeout, f"{what}: {elapsed:.0f}s of {timeout:.0f}s"))


def take() -> list[tuple[float, str]]:
    """The waits recorded since the last call, and forget them."""
    taken = list(_used)
    _used.clear()
    return taken


def wait_until(what: str, ready: Callable[[], T], timeout: float = 180, every: float = 0.5) -> T:
    """Poll `ready()` until it gives something true, and return that."""
    start = time.monotonic()
    end = start + timeout
    while True:
        value = ready()
        if value:
            note(what, time.monotonic() - start, timeout)
            return value
        if time.monotonic() >= end:
            note(what, time.monotonic() - start, timeout)
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(every)
