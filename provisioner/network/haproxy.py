"""The load balancer: Debian's HAProxy, run in master-worker mode and kept in step.

Structure (which VIPs, ports and guests) changes by rewriting the config and reloading:
the master starts a new worker that takes over the listening sockets while the old one
finishes its open connections, so a reload drops nothing. A guest's admission and drain
go through the runtime API (the admin socket). HAProxy runs on its own (daemonized): a
daemon killed with -9 leaves the service up, and the next daemon adopts it by its pid
file and reloads it. A daemon that stops leaves it serving too."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import jinja2

from .. import __version__
from ..errors import ConfigError, ProvisionerError
from ..guests.roles import Endpoint
from ..processes import pid_alive, stop_pids

LOG = logging.getLogger(__name__)
TEMPLATES = Path(__file__).parent / "templates"


class BalancerError(ProvisionerError):
    """HAProxy refused a config or did not answer on its admin socket."""


class AdminState(StrEnum):
    READY = "ready"
    DRAIN = "drain"
    MAINT = "maint"


class Health(StrEnum):
    """A member as the load balancer sees it."""
    UP = "up"  # passes its check, takes connections
    DOWN = "down"  # fails its check
    DRAINING = "draining"  # open connections finish, no new ones
    OUT = "out"  # not admitted (starting, being changed)
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    port: int
    enabled: bool


@dataclass(frozen=True)
class Listener:
    proxy: str
    vip: str
    port: int
    endpoint: Endpoint
    servers: tuple[Server, ...]


@dataclass(frozen=True)
class ServerStat:
    proxy: str
    server: str
    health: Health
    check: str  # HAProxy's last check result, e.g. L7OK, L4CON
    sessions: int  # open connections now
    total: int  # connections since the worker started


def _health(status: str) -> Health:
    word = status.split()[0] if status else ""
    if word.startswith("MAINT"):
        return Health.OUT
    if word == "DRAIN" or word == "NOLB":
        return Health.DRAINING
    if word == "UP":
        return Health.UP
    if word == "DOWN":
        return Health.DOWN
    return Health.UNKNOWN


def parse_stats(csv: str) -> list[ServerStat]:
    """Servers from 'show stat' (CSV: pxname, svname, ..., scur at 4, stot at 7, status at
    17, check_status at 36)."""
    out = []
    for line in csv.splitlines():
        if not line or line.startswith("#"):
            continue
        f = line.split(",")
        if len(f) < 37 or f[1] in ("FRONTEND", "BACKEND"):
            continue
        out.append(ServerStat(f[0], f[1], _health(f[17]), f[36], int(f[4] or 0), int(f[7] or 0)))
    return out


class Balancer(Protocol):
    """What the endpoints need of a load balancer (HAProxy here; a fake in unit tests)."""

    def apply(self, listeners: list[Listener]) -> bool: ...
    def set_state(self, proxy: str, server: str, state: AdminState) -> None: ...
    def stats(self) -> list[ServerStat]: ...
    def master_pid(self) -> int | None: ...
    def supervise(self, interval: float = 1.0) -> None: ...
    def stop_supervising(self) -> None: ...
    def stop(self) -> None: ...


class Haproxy:
    def __init__(self, directory: Path, binary: str = "haproxy", maxconn: int = 4096) -> None:
        self.dir = directory
        self.binary = binary
        self.maxconn = maxconn
        self.conf_file = directory / "haproxy.cfg"
        self.pid_file = directory / "haproxy.pid"
        self.admin_socket = directory / "admin.sock"
        self.master_socket = directory / "master.sock"
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0
        self._env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                                       undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                       trim_blocks=True, autoescape=False)

    def render(self, listeners: list[Listener]) -> str:
        return self._env.get_template("haproxy.cfg.j2").render(
            version=__version__, pid_file=self.pid_file, admin_socket=self.admin_socket, maxconn=self.maxconn,
            listeners=listeners)

    # -- the process ------------------------------------------------------------
    def _binary(self) -> str:
        found = shutil.which(self.binary)
        if found is None:
            raise ConfigError(f"HAProxy not found ({self.binary}): install Debian's haproxy")
        return found

    def master_pid(self) -> int | None:
        """The master of our config, running (ours, or one a killed daemon left)."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        if str(self.conf_file).encode() not in cmdline or not pid_alive(pid):
            return None
        return pid

    def apply(self, listeners: list[Listener]) -> bool:
        """Make HAProxy run this config: start it, or reload it if the config changed.
        True when something changed. A config HAProxy refuses changes nothing."""
        text = self.render(listeners)
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            pid = self.master_pid()
            if pid is not None and self.conf_file.exists() and self.conf_file.read_text() == text:
                return False
            candidate = self.conf_file.with_suffix(".new")
            candidate.write_text(text)
            check = subprocess.run([self._binary(), "-c", "-q", "-f", str(candidate)], capture_output=True,
                                   text=True)
            if check.returncode != 0:
                candidate.unlink()
                raise BalancerError(f"HAProxy refused the endpoints' config: "
                                    f"{(check.stderr or check.stdout).strip().splitlines()[-1:]}")
            os.replace(candidate, self.conf_file)
            if pid is None:
                self._spawn()
            else:
                self._reload(pid)
            return True

    def _spawn(self) -> None:
        self.pid_file.unlink(missing_ok=True)
        proc = subprocess.run([self._binary(), "-W", "-D", "-f", str(self.conf_file), "-p", str(self.pid_file),
                               "-S", f"{self.master_socket},mode,600"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BalancerError(f"HAProxy did not start: {proc.stderr.strip().splitlines()[-1:]}")
        self._wait_worker(None)
        LOG.info("endpoints: HAProxy started (master pid %s)", self.master_pid())

    def _reload(self, pid: int) -> None:
        before = self._worker_pid()
        os.kill(pid, signal.SIGUSR2)
        self._wait_worker(before)
        LOG.info("endpoints: HAProxy reloaded (master pid %d)", pid)

    def _worker_pid(self) -> int | None:
        try:
            for line in self.command("show info").splitlines():
                if line.startswith("Pid:"):
                    return int(line.split(":", 1)[1])
        except (BalancerError, ValueError):
            return None
        return None

    def _wait_worker(self, old: int | None, timeout: float = 10.0) -> None:
        """Until a worker other than `old` answers on the admin socket."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pid = self._worker_pid()
            if pid is not None and pid != old:
                return
            time.sleep(0.05)
        raise BalancerError(f"HAProxy's new worker did not answer on {self.admin_socket} within {timeout:.0f}s")

    def supervise(self, interval: float = 1.0) -> None:
        """Start HAProxy again if it dies (with the config it had)."""
        def watch() -> None:
            while not self._stop.wait(interval):
                with self._lock:
                    if self.conf_file.exists() and self.master_pid() is None:
                        self.restarts += 1
                        LOG.error("endpoints: HAProxy is not running; starting it again")
                        try:
                            self._spawn()
                        except ProvisionerError as exc:
                            LOG.error("endpoints: %s", exc)
        self._thread = threading.Thread(target=watch, name="haproxy-supervisor", daemon=True)
        self._thread.start()

    def stop_supervising(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def stop(self) -> None:
        self.stop_supervising()
        with self._lock:
            pid = self.master_pid()
            if pid is not None:
                stop_pids([pid], grace=5.0)
                LOG.info("endpoints: HAProxy stopped")

    # -- the runtime API ----------------------------------------------------------
    def command(self, line: str, timeout: float = 5.0) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(self.admin_socket))
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise BalancerError(f"HAProxy's admin socket did not answer '{line}': {exc}") from exc
        return b"".join(chunks).decode(errors="replace")

    def set_state(self, proxy: str, server: str, state: AdminState) -> None:
        reply = self.command(f"set server {proxy}/{server} state {state}").strip()
        if reply:
            raise BalancerError(f"HAProxy: set {proxy}/{server} {state}: {reply}")

    def stats(self) -> list[ServerStat]:
        return parse_stats(self.command("show stat"))
