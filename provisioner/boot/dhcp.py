"""DHCP through a dnsmasq child process: configured from a template, started,
supervised (restarted with backoff when it dies), reloaded with SIGHUP when nodes
change, and its log read back for counters and for discovered MACs."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from .. import __version__
from ..config import Settings
from ..errors import ConfigError
from ..processes import stop_pids
from .counters import Counters
from .render import Renderer

LOG = logging.getLogger(__name__)

# "... dnsmasq-dhcp[42]: 123 DHCPACK(br0) 10.99.0.100 52:54:00:aa:bb:cc name"
_LINE_RE = re.compile(
    r"(?P<kind>DHCP[A-Z]+)\((?P<iface>[^)]*)\) (?:(?P<ip>[0-9.]+) )?(?P<mac>[0-9a-f]{2}(?::[0-9a-f]{2}){5})"
    r"(?: (?P<rest>.*))?$")


HostEntry = tuple[int, str, str]  # node id, MAC, name


def assign_addresses(node_ids: list[int], start: str, end: str) -> dict[int, str]:
    """A fixed address per node from the DHCP range, stable while the node exists.

    dnsmasq does not reserve an address it has offered, so two machines that ask at the
    same moment can be offered the same one; a fixed address per enrolled MAC avoids that.
    Node n prefers start + n - 1 and takes the next free one if that is held."""
    first, last = ipaddress.IPv4Address(start), ipaddress.IPv4Address(end)
    size = int(last) - int(first) + 1
    if size < len(node_ids):
        raise ConfigError(f"DHCP range {start}-{end} has {size} addresses for {len(node_ids)} nodes: "
                          "widen dhcp.range")
    taken: set[int] = set()
    out = {}
    for node_id in sorted(node_ids):
        offset = (node_id - 1) % size
        while offset in taken:
            offset = (offset + 1) % size
        taken.add(offset)
        out[node_id] = str(first + offset)
    return out


def parse_log_line(line: str) -> tuple[str, str, str | None, str] | None:
    """(kind, mac, ip, rest) for a dnsmasq DHCP log line, None for other lines."""
    match = _LINE_RE.search(line.strip())
    if not match:
        return None
    return match["kind"], match["mac"], match["ip"], match["rest"] or ""


def stale_dnsmasq(pid_file: Path, conf_file: Path) -> int | None:
    """The dnsmasq a previous daemon left running on this configuration (a daemon killed
    with -9 takes no child with it), by its pid file; None when there is none."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if pid == os.getpid() or f"--conf-file={conf_file}".encode() not in cmdline:
        return None
    return pid


class DhcpService:
    def __init__(self, settings: Settings, renderer: Renderer, counters: Counters,
                 on_unknown_mac: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.renderer = renderer
        self.counters = counters
        self.on_unknown_mac = on_unknown_mac
        self.dir = settings.data_dir / "dnsmasq"
        self.conf_file = self.dir / "dnsmasq.conf"
        self.hosts_file = self.dir / "hosts"
        self.pid_file = self.dir / "dnsmasq.pid"
        self.names_file = self.dir / "names"
        self.log_file = settings.log_dir / "dnsmasq.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.restarts = 0

    # -- configuration --------------------------------------------------------
    def render_config(self) -> str:
        s = self.settings
        start, _, end = s.dhcp_range.partition(",")
        return self.renderer.render(
            "dnsmasq.conf.j2", version=__version__, log_file=self.log_file,
            lease_file=self.dir / "leases", pid_file=self.pid_file,
            interface=s.dhcp_interface, mode=s.dhcp_mode, proxy_subnet=s.dhcp_proxy_subnet,
            range_start=start.strip(), range_end=end.strip(), netmask=s.dhcp_netmask,
            lease_time=s.dhcp_lease_time, hosts_file=self.hosts_file,
            unknown_macs=s.dhcp_unknown_macs, uefi_loader="snponly.efi",
            router_advertisements=s.dhcp_router_advertisements, dns_domain=s.dns_domain, dns_port=s.dns_port,
            names_file=self.names_file)

    def addresses(self, nodes: Iterable[HostEntry]) -> dict[str, str]:
        """Each enrolled node's fixed address, by name (none in proxy mode)."""
        entries = sorted(nodes)
        if self.settings.dhcp_mode == "proxy":
            return {}
        start, _, end = self.settings.dhcp_range.partition(",")
        addresses = assign_addresses([e[0] for e in entries], start.strip(), end.strip())
        return {name: addresses[node_id] for node_id, _mac, name in entries}

    def hup(self) -> None:
        """dnsmasq reads its hosts files (enrolled MACs, names) again."""
        with self._lock:
            if self._proc and self._proc.poll() is None:
                self._proc.send_signal(signal.SIGHUP)
                LOG.info("dhcp: dnsmasq told to read its hosts files again")

    def hosts_lines(self, nodes: Iterable[HostEntry]) -> list[str]:
        entries = sorted(nodes)
        if self.settings.dhcp_mode == "proxy":
            return [f"{mac},set:enrolled,{name}\n" for _id, mac, name in entries]
        start, _, end = self.settings.dhcp_range.partition(",")
        addresses = assign_addresses([e[0] for e in entries], start.strip(), end.strip())
        return [f"{mac},set:enrolled,{addresses[node_id]},{name}\n" for node_id, mac, name in entries]

    def write_hosts(self, nodes: Iterable[HostEntry]) -> None:
        """Atomically rewrite the enrolled hosts file from (id, mac, name) entries."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.hosts_file.with_suffix(".tmp")
        tmp.write_text("".join(self.hosts_lines(nodes)))
        os.replace(tmp, self.hosts_file)

    # -- process supervision --------------------------------------------------
    def start(self, nodes: Iterable[HostEntry]) -> None:
        binary = shutil.which(self.settings.dhcp_dnsmasq)
        if binary is None:
            raise ConfigError(f"dnsmasq not found ({self.settings.dhcp_dnsmasq}): "
                              "install Debian's dnsmasq-base or set dhcp.enabled = false")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        stale = stale_dnsmasq(self.pid_file, self.conf_file)
        if stale is not None:  # two DHCP servers on one network would answer every node twice
            LOG.warning("dhcp: stopping dnsmasq (pid %d) that a previous daemon left running", stale)
            stop_pids([stale], grace=5.0)
        if self.settings.dns_domain and not self.names_file.exists():
            self.names_file.write_text("")
        self.conf_file.write_text(self.render_config())
        self.write_hosts(nodes)
        check = subprocess.run([binary, "--test", f"--conf-file={self.conf_file}"],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise ConfigError(f"dnsmasq refused its config: {check.stderr.strip()}")
        self._binary = binary
        for target, name in ((self._supervise, "dhcp-supervisor"), (self._follow_log, "dhcp-log")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [self._binary, "--keep-in-foreground", f"--conf-file={self.conf_file}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _supervise(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            with self._lock:
                self._proc = self._spawn()
                proc = self._proc
            LOG.info("dhcp: dnsmasq started (pid %d)", proc.pid)
            started = time.monotonic()
            _, err = proc.communicate()
            if self._stop.is_set():
                return
            self.restarts += 1
            if time.monotonic() - started > 30:
                backoff = 1.0
            LOG.error("dhcp: dnsmasq exited with %s: %s; restarting in %.0fs", proc.returncode,
                      err.decode(errors="replace").strip() or "no message", backoff)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    def _follow_log(self) -> None:
        with self.log_file.open() as fh:
            fh.seek(0, os.SEEK_END)
            while not self._stop.is_set():
                line = fh.readline()
                if not line:
                    self._stop.wait(0.2)
                    continue
                self._observe(line)

    def _observe(self, line: str) -> None:
        parsed = parse_log_line(line)
        if parsed is None:
            return
        kind, mac, _ip, rest = parsed
        if "ignored" in rest:
            self.counters.add("dhcp:ignored")
            if self.settings.dhcp_unknown_macs == "discover" and self.on_unknown_mac:
                self.on_unknown_mac(mac)
        else:
            self.counters.add(f"dhcp:{kind.lower()}")

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._proc.pid if self._proc and self._proc.poll() is None else None

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for thread in self._threads:
            thread.join(timeout=5)
