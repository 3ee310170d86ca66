"""Small wrappers for the system commands the lab drives (ip, qemu-img, vbmc), each
failure turned into one LabError line."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import LabError
from ..processes import pid_alive as pid_alive, stop_pids as stop_pids  # the lab's modules use them from here


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


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
