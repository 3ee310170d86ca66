"""Small wrappers for the system commands the lab drives (ip, qemu-img, vbmc), each
failure turned into one LabError line."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import LabError


def run(cmd: Sequence[str], *, netns: str | None = None, env: Mapping[str, str] | None = None,
        check: bool = True, timeout: float = 120,
        secrets: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run a command (in the lab's namespace if given); `secrets` never appear in errors."""
    full = (["ip", "netns", "exec", netns] if netns else []) + list(cmd)
    shown = " ".join(full)
    for secret in secrets:
        shown = shown.replace(secret, "***")
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except FileNotFoundError as exc:
        raise LabError(f"{full[0]} is not installed: run 'make setup'") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{shown} did not finish in {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        raise LabError(f"{shown} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def netns_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()


def netns_pids(name: str) -> list[int]:
    if not netns_exists(name):
        return []
    out = run(["ip", "netns", "pids", name], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def netns_pids_named(netns: str, name: bytes) -> list[int]:
    """The namespace's processes whose command line holds `name`."""
    found = []
    for pid in netns_pids(netns):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if name in cmdline:
            found.append(pid)
    return found


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


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
