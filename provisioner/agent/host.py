"""The host agent: runs on a deployed host, authenticates with the credential the deploy
wrote to the data partition, and heartbeats with the host's facts (cores, memory, free
disk, what it can run guests with)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from . import inventory
from .api import AgentApi, AuthRejected, Refused

LOG = logging.getLogger("agent")
DISK = Path("/var/lib/provisioner/disk")


def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


_versions: dict[tuple[str, float], str | None] = {}


def _version(binary: str) -> str | None:
    """`binary --version`'s first line, asked again only when the binary changes. Starting
    qemu (some eighty shared libraries) at every heartbeat was most of an idle host's CPU
    under emulation (6.5 % of a core in the lab)."""
    path = shutil.which(binary)
    if path is None:
        return None
    try:
        key = (path, os.stat(path).st_mtime)
    except OSError:
        return None
    if key not in _versions:
        _versions[key] = _first_line([path, "--version"])
    return _versions[key]


def _running(name: str) -> bool:
    for pid in Path("/proc").iterdir():
        if pid.name.isdigit():
            try:
                if (pid / "comm").read_text().strip() == name:
                    return True
            except OSError:
                continue
    return False


def _key_values(path: Path) -> dict[str, str]:
    """KEY=value lines (the deploy's state and network files), keys lowercased; {} if absent."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return {key.lower(): value for key, _, value in (line.partition("=") for line in lines)}


EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"


def secure_boot(root: Path = Path("/")) -> bool | None:
    """Whether the firmware booted this host with Secure Boot enforced (the SecureBoot
    variable: 4 bytes of attributes, then 1 or 0); None on a BIOS host."""
    if not (root / "sys/firmware/efi").is_dir():
        return None
    try:
        data = (root / f"sys/firmware/efi/efivars/SecureBoot-{EFI_GLOBAL}").read_bytes()
    except OSError:
        return False  # no variable: a firmware without Secure Boot
    return data[4:5] == b"\x01"


def guest_bridge(root: Path = Path("/"), name: str = "br0") -> str | None:
    """The bridge the host image made over its NIC for guests, if it is there."""
    return name if (root / "sys/class/net" / name / "bridge").is_dir() else None


def facts(root: Path = Path("/"), disk: Path = DISK) -> dict[str, Any]:
    cpu = inventory.cpu_info(root)
    mem = inventory.memory_info(root)
    free = {}
    for label, path in (("root", root), ("data", disk)):
        try:
            st = os.statvfs(path)
            free[label] = st.f_bavail * st.f_frsize
        except OSError:
            continue
    state = _key_values(disk / "state")
    network = _key_values(disk / "node/network")
    return {
        "cpu": cpu, "memory": mem, "disk_free_bytes": free, "address": network.get("ip"),
        "hypervisor": {"kvm": Path("/dev/kvm").exists(),
                       "qemu": _version("qemu-system-x86_64"),
                       "libvirtd": _running("libvirtd")},
        "base_sha256": state.get("base"),
        "secure_boot": secure_boot(root),
        "bridge": guest_bridge(root),
        "kernel": os.uname().release,
        "uptime_s": float((root / "proc/uptime").read_text().split()[0]) if (root / "proc/uptime").exists() else None,
    }


class HostAgent:
    def __init__(self, api: AgentApi, collect: Callable[[], dict[str, Any]] = facts,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.api = api
        self.collect = collect
        self.sleep = sleep
        self.interval = 10.0

    def heartbeat_once(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.api.call("/v1/host/heartbeat", {"facts": self.collect()})
        self.interval = float(doc.get("heartbeat_interval", self.interval))
        return doc

    def run(self, once: bool = False) -> None:
        while True:
            try:
                self.heartbeat_once()
            except (AuthRejected, Refused) as exc:
                # A reimage replaces the credential; until then there is nothing to do but wait.
                LOG.error("host agent: refused (%s); trying again in 30s", exc)
                self.sleep(30)
                continue
            if once:
                return
            self.sleep(self.interval)


def main(config: Path, once: bool = False) -> int:
    try:
        conf = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        LOG.error("host agent: cannot read %s: %s", config, exc)
        return 2
    api = AgentApi(conf["api"])
    api.token = conf["token"]
    LOG.info("host agent: reporting to %s", conf["api"])
    HostAgent(api).run(once=once)
    return 0
