"""What agents report about machines, as typed records: the maintenance agent's inspection
(Hardware) and the host agent's facts (HostFacts). Each is parsed once, where the report
enters the daemon, with one clear error for a malformed one; the rest of the daemon reads
fields, not dictionaries. The raw documents are still what is stored and shown."""

from __future__ import annotations

import re


from dataclasses import dataclass
from typing import Any, Mapping

from .errors import InvalidInput

_INVENTORY_KEYS = {"cpu": dict, "memory": dict, "disks": list, "nics": list, "dmi": dict, "firmware": str}


def _count(doc: Mapping[str, Any], section: str, key: str, what: str) -> int | None:
    part = doc.get(section)
    if part is None:
        return None
    if not isinstance(part, dict):
        raise InvalidInput(f"{what}.{section} must be an object")
    value = part.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{what}.{section}.{key} must be a whole number, not {value!r}")
    return value


@dataclass(frozen=True)
class Disk:
    name: str
    size_bytes: int


@dataclass(frozen=True)
class Hardware:
    """A machine as its inspection found it."""
    cpus: int | None
    memory_mib: int | None  # installed (SMBIOS), else what the kernel sees
    disks: tuple[Disk, ...]
    nics: int
    firmware: str
    vendor: str | None = None
    product: str | None = None
    serial: str | None = None

    @classmethod
    def parse(cls, doc: Any) -> "Hardware":
        """An inspection report's inventory, or InvalidInput naming what is wrong."""
        if not isinstance(doc, dict):
            raise InvalidInput("inspection report needs an 'inventory' object")
        for key, kind in _INVENTORY_KEYS.items():
            if not isinstance(doc.get(key), kind):
                raise InvalidInput(f"inventory.{key} must be a {kind.__name__}")
        disks = []
        for i, disk in enumerate(doc["disks"]):
            if not isinstance(disk, dict) or not isinstance(disk.get("name"), str):
                raise InvalidInput(f"inventory.disks[{i}] must be an object with a name")
            size = disk.get("size_bytes") or 0
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidInput(f"inventory.disks[{i}].size_bytes must be a whole number")
            disks.append(Disk(disk["name"], size))
        dmi = doc["dmi"]
        return cls(cpus=_count(doc, "cpu", "count", "inventory"),
                   memory_mib=_count(doc, "memory", "total_mib", "inventory"),
                   disks=tuple(disks), nics=len(doc["nics"]), firmware=doc["firmware"],
                   vendor=_text(dmi.get("sys_vendor")), product=_text(dmi.get("product_name")),
                   serial=_text(dmi.get("product_serial")))

    def summary(self) -> str:
        return (f"{self.cpus} CPUs, {self.memory_mib} MiB, {len(self.disks)} disks, {self.nics} NICs, "
                f"{self.firmware}")

    def view(self) -> dict[str, Any]:
        """The short form node views show."""
        return {"cpus": self.cpus, "memory_mib": self.memory_mib,
                "disks": [f"{d.name}:{d.size_bytes // (1 << 30)}G" for d in self.disks],
                "disk_bytes": sum(d.size_bytes for d in self.disks), "nics": self.nics,
                "firmware": self.firmware, "vendor": self.vendor, "product": self.product,
                "serial": self.serial}


@dataclass(frozen=True)
class HostFacts:
    """A deployed host as its host agent reports it."""
    address: str | None
    cpus: int | None
    memory_mib: int | None  # usable, as the host's kernel sees it
    base_sha256: str | None
    kvm: bool
    secure_boot: bool | None = None  # UEFI Secure Boot as the host's firmware says; None: not UEFI
    bridge: str | None = None  # the bridge guests' NICs join (the host image makes br0 over its NIC)

    @classmethod
    def parse(cls, doc: Any) -> "HostFacts":
        if not isinstance(doc, dict):
            raise InvalidInput("a host heartbeat needs a 'facts' object")
        address, base = doc.get("address"), doc.get("base_sha256")
        for key, value in (("address", address), ("base_sha256", base)):
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f"facts.{key} must be a string")
        usable = _count(doc, "memory", "usable_mib", "facts")
        hypervisor = doc.get("hypervisor", {})
        if not isinstance(hypervisor, dict):
            raise InvalidInput("facts.hypervisor must be an object")
        return cls(address=address, cpus=_count(doc, "cpu", "count", "facts"),
                   memory_mib=usable if usable is not None else _count(doc, "memory", "total_mib", "facts"),
                   base_sha256=base, kvm=bool(hypervisor.get("kvm")),
                   secure_boot=doc["secure_boot"] if isinstance(doc.get("secure_boot"), bool) else None,
                   bridge=_interface(doc.get("bridge")))


def is_interface_name(text: object) -> bool:
    """A Linux interface name: at most 15 characters, no slash or space."""
    return isinstance(text, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", text) is not None


def _interface(value: Any) -> str | None:
    return value if is_interface_name(value) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
