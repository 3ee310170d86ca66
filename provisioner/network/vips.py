"""Endpoint VIPs as addresses on an interface of the provisioner's host (iproute2), each a
/32, so HAProxy can bind them and the host answers ARP for them. Only addresses inside
network.endpoint_range are ever added or removed."""

from __future__ import annotations

import json
import logging
import subprocess

from ..errors import ConfigError
from .addresses import IPv4, AddressRange

LOG = logging.getLogger(__name__)


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError(f"ip {' '.join(args)}: {proc.stderr.strip() or 'failed'}")
    return proc.stdout


def present(interface: str, span: AddressRange) -> set[str]:
    doc = json.loads(_ip("-j", "addr", "show", "dev", interface) or "[]")
    return {a["local"] for link in doc for a in link.get("addr_info", [])
            if a.get("family") == "inet" and IPv4(a["local"]) in span}


def keep_adding(interface: str, span: AddressRange, wanted: set[str]) -> None:
    """Every `wanted` address on the interface (before a config that binds them)."""
    for vip in sorted(wanted - present(interface, span)):
        _ip("addr", "add", f"{vip}/32", "dev", interface)
        LOG.info("endpoints: VIP %s added on %s", vip, interface)


def drop_others(interface: str, span: AddressRange, wanted: set[str]) -> None:
    """No address of the range on the interface but `wanted` (after a config that no
    longer binds them)."""
    for vip in sorted(present(interface, span) - wanted):
        _ip("addr", "del", f"{vip}/32", "dev", interface)
        LOG.info("endpoints: VIP %s removed from %s", vip, interface)


class Vips:
    """The endpoint range's addresses on one interface."""

    def __init__(self, interface: str, span: AddressRange) -> None:
        self.interface = interface
        self.span = span

    def add(self, wanted: set[str]) -> None:
        keep_adding(self.interface, self.span, wanted)

    def drop_others(self, wanted: set[str]) -> None:
        drop_others(self.interface, self.span, wanted)
