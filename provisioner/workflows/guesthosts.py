"""The hypervisor hosts guests can run on, and how the provisioner reaches them.

Two kinds: nodes the provisioner deployed (active, with a live host agent: their address
and CPUs come from the agent, their SSH host key was made at deploy time), and hosts
registered by hand (`provisioner host add`: a libvirt host the provisioner did not
deploy; the operator gives its SSH host key, and its CPUs and memory are read from its
libvirtd when it is added). Either way every connection checks the recorded key."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import Conflict, InvalidInput, NotFound
from ..guests.placement import Host
from ..hypervisor.connect import open_host
from ..hypervisor.domains import GuestHost, HostConnection
from ..hypervisor.pool import Pool
from ..hypervisor.ssh import read_tail
from ..hardware import is_interface_name
from ..models import parse_host_address, parse_port, validate_name
from ..sshkeys import operator_key
from ..states import State
from ..store import Store


@dataclass(frozen=True)
class HostRecord:
    name: str
    kind: str  # node | registered
    rack: str
    cores: int
    memory_mib: int
    address: str
    port: int
    host_key: str
    available: bool  # may run guests now (a node: active with its host agent alive)
    why: str = ""  # why not, when not
    bridge: str = ""  # the bridge guests' NICs join on this host ("": none, guests get a user-mode NIC)
    fenced: bool = False  # out for repair: powered off, its guests are placed elsewhere, nothing reaches it

    def placement(self) -> Host:
        return Host(self.name, self.rack, self.cores, self.memory_mib)

    def doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("host_key")
        return doc


LOG = logging.getLogger(__name__)


def host_records(store: Store) -> dict[str, HostRecord]:
    out: dict[str, HostRecord] = {}
    for node in store.list_nodes():
        facts = node.facts
        if facts is None or facts.cpus is None or facts.memory_mib is None or not facts.address \
                or not node.host_key:
            continue  # never ran as a host
        why = "" if node.state == State.ACTIVE and not node.host_lost else \
            ("its host agent is lost" if node.host_lost and node.state == State.ACTIVE else
             f"it is {node.state.value}" + (f" ({node.last_error})" if node.last_error else ""))
        out[node.name] = HostRecord(node.name, "node", node.rack, facts.cpus, facts.memory_mib, facts.address, 22,
                                    node.host_key, not why, why, facts.bridge or "",
                                    node.state == State.OUT_FOR_REPAIR)
    for row in store.registered_hosts():
        out[row["name"]] = HostRecord(row["name"], "registered", row["rack"], row["cores"], row["memory_mib"],
                                      row["address"], row["port"], row["host_key"], True, "", row["bridge"])
    return out


class HostLinks:
    """Connections to hosts: libvirt over qemu+libssh, files over paramiko, both with the
    provisioner's operator key and the host's recorded key only."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.known_dir = settings.data_dir / "known_hosts"

    @property
    def key_file(self) -> Path:
        return operator_key(self.settings.data_dir)[0]

    def public_key(self) -> str:
        return operator_key(self.settings.data_dir)[1]

    def connect(self, host: HostRecord) -> HostConnection:
        return HostConnection(self._open(host), host.name)

    def _open(self, host: HostRecord) -> Any:
        return open_host(host.name, host.address, host.host_key, self.key_file, self.known_dir, port=host.port)

    def guest_host(self, host: HostRecord) -> GuestHost:
        conn = self._open(host)
        try:
            pool = Pool(conn, Path(self.settings.guests_pool_path))
            return GuestHost(conn, pool, Path(self.settings.guests_console_dir), self.settings.guests_domain_type,
                             host.name)
        except BaseException:
            conn.close()
            raise

    def console(self, host: HostRecord, guest: str, max_bytes: int) -> bytes:
        path = str(Path(self.settings.guests_console_dir) / f"{guest}.log")
        return read_tail(host.name, host.address, host.port, host.host_key, self.key_file, path, max_bytes)


def register_host(store: Store, links: HostLinks, body: dict[str, Any]) -> dict[str, Any]:
    """Record a libvirt host the provisioner did not deploy, after connecting to it with
    the host key the operator gave (nothing is recorded if that fails)."""
    name = validate_name(str(body.get("name") or ""), "host name")
    address = parse_host_address(str(body.get("address") or ""), "host address")
    rack = validate_name(str(body.get("rack") or ""), "rack")
    port = parse_port(body.get("port", 22), "SSH port")
    bridge = str(body.get("bridge") or "")
    if bridge and not is_interface_name(bridge):
        raise InvalidInput(f"invalid bridge name {bridge!r}: a Linux interface name, at most 15 characters")
    key = " ".join(str(body.get("host_key") or "").split()[:2])
    if len(key.split()) != 2:
        raise InvalidInput("give the host's SSH public host key, e.g. the line of "
                           "/etc/ssh/ssh_host_ed25519_key.pub ('ssh-ed25519 AAAA...')")
    if name in host_records(store) or any(n.name == name for n in store.list_nodes()):
        raise Conflict(f"a host or node named {name} already exists")
    record = HostRecord(name, "registered", rack, 0, 0, address, port, key, True, "", bridge)
    with links.connect(record) as host:
        cpus, memory_mib = host.machine()
    row = store.add_host(name=name, address=address, port=port, rack=rack, host_key=key, cores=int(cpus),
                         memory_mib=int(memory_mib), bridge=bridge)
    LOG.info("host %s (%s:%d) registered: %d cores, %d MiB, %s", name, address, port, cpus, memory_mib, rack)
    row.pop("host_key")
    return row


def find_host(store: Store, name: str) -> HostRecord:
    records = host_records(store)
    if name not in records:
        raise NotFound(f"no host {name!r}: see 'provisioner host list'")
    return records[name]
