"""Processes the provisioner stops: the lab's, and a dnsmasq a killed daemon left behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Sequence


def pid_alive(pid: int) -> bool:
    """Running, not merely waiting to be reaped: a process that exited stays a zombie until
    its parent waits for it (the daemon is this process's child when the lab was brought up
    from here), and a zombie must not hold a stop up for its whole grace time."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reaps it if it is our child and has exited
    except ChildProcessError:
        pass  # not our child: its own parent reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop_pids(pids: Sequence[int], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is still alive after `grace` seconds."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + grace
    while time.monotonic() < end and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
