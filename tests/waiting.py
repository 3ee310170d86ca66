"""Waiting for a condition, shared by the test tiers and the benchmarks."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(what: str, ready: Callable[[], T], timeout: float = 180, every: float = 0.5) -> T:
    """Poll `ready()` until it gives something true, and return that."""
    end = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        assert time.monotonic() < end, f"{what}: not within {timeout:.0f}s"
        time.sleep(every)
