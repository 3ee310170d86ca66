"""Append-only access logs of the boot servers, one timestamped line per request, read
back by tests and benchmarks as the servers' own record."""

from __future__ import annotations

import threading
import time
from pathlib import Path


class AccessLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, line: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
        with self._lock, self.path.open("a") as fh:
            fh.write(f"{stamp} {line}\n")


def parse_time(stamp: str) -> float:
    """The epoch seconds of an AccessLog timestamp."""
    whole, _, millis = stamp.partition(".")
    return time.mktime(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(millis or 0) / 1000


def dnsmasq_time(line: str) -> float:
    """The epoch seconds of a dnsmasq log line ("Nov 22 02:28:01 dnsmasq-dhcp[..]: ..."):
    whole seconds, and no year in the log, so this year's."""
    stamp = " ".join(line.split()[:3])
    return time.mktime(time.strptime(f"{time.localtime().tm_year} {stamp}", "%Y %b %d %H:%M:%S"))
