"""Domain objects shared across the daemon: nodes, BMC credentials, power vocabulary."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import cached_property
from enum import StrEnum
from typing import Any, Callable, TypeVar

from .errors import InvalidInput, ProvisionerError
from .hardware import Hardware, HostFacts
from .secrets import Secret
from .states import State, Step

T = TypeVar("T")
_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# IPMI 2.0 (section 22.26, Set User Name / Set User Password): names up to 16 bytes,
# passwords up to 20; printable ASCII, so what an operator typed is what the BMC gets.
IPMI_MAX_USERNAME, IPMI_MAX_PASSWORD = 16, 20
_PRINTABLE_RE = re.compile(r"^[\x20-\x7e]+$")

# The same domains as JSON Schema, for the OpenAPI document: what the parsers below accept.
NAME_SCHEMA = {"type": "string", "pattern": _NAME_RE.pattern, "maxLength": 63}
MAC_SCHEMA = {"type": "string", "pattern": "^([0-9A-Fa-f]{2}[:-]?){5}[0-9A-Fa-f]{2}$",
              "description": "a unicast MAC, not all zeros"}
ADDRESS_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 253,
                  "description": "an IP address or a DNS name"}
PORT_SCHEMA = {"type": "integer", "minimum": 1, "maximum": 65535}


class PowerState(StrEnum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


class PowerAction(StrEnum):
    ON = "on"
    OFF = "off"
    CYCLE = "cycle"
    STATUS = "status"


class BootDevice(StrEnum):
    NETWORK = "network"
    DISK = "disk"


class BootMode(StrEnum):
    """The firmware's way of booting, as a boot override names it."""
    LEGACY = "legacy"
    UEFI = "uefi"


class BmcDriver(StrEnum):
    """The protocol a node's BMC speaks."""
    IPMI = "ipmi"
    REDFISH = "redfish"

    @property
    def label(self) -> str:
        return "IPMI" if self == BmcDriver.IPMI else "Redfish"


# Redfish system paths: the service's own Systems collection, one member.
_SYSTEM_RE = re.compile(r"^/redfish/v1/Systems/[A-Za-z0-9._~:@!$&'()*+,;=-]{1,128}$")
SYSTEM_SCHEMA = {"type": "string", "pattern": _SYSTEM_RE.pattern,
                 "description": "a Redfish system path, /redfish/v1/Systems/<id>"}


def normalize_mac(text: str) -> str:
    """aa:bb:cc:dd:ee:ff from any common spelling; InvalidInput otherwise."""
    candidate = text.strip().lower()
    if not _MAC_RE.match(candidate):
        raise InvalidInput(f"malformed MAC address {text!r}: expected six hex pairs like 52:54:00:12:34:56")
    digits = re.sub(r"[:-]", "", candidate)
    mac = ":".join(digits[i:i + 2] for i in range(0, 12, 2))
    if int(digits[0:2], 16) & 1:
        raise InvalidInput(f"MAC address {text!r} is a multicast address, not a NIC's")
    if int(digits, 16) == 0:
        raise InvalidInput(f"MAC address {text!r} is all zeros, not a NIC's")
    return mac


def parse_host_address(text: str, what: str = "host address") -> str:
    """An IP address a machine can have, or a DNS name (RFC 1123); IPs come back in their
    canonical spelling."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        labels = text[:-1].split(".") if text.endswith(".") else text.split(".")
        if not text or len(text) > 253 or not all(_LABEL_RE.match(label) for label in labels) \
                or labels[-1].isdigit():  # 10.0.0.999 is a broken IP address, not a name
            raise InvalidInput(f"invalid {what} {text!r}: give an IP address or a DNS name") from None
        return text.lower()
    if ip.is_unspecified or ip.is_multicast or ip == ipaddress.ip_address("255.255.255.255"):
        raise InvalidInput(f"invalid {what} {text!r}: no machine has that address")
    return str(ip)


def parse_port(value: Any, what: str) -> int:
    """A TCP/UDP port, 1-65535, as a JSON integer or its digits."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) \
            or (isinstance(value, str) and not value.isascii()) \
            or (isinstance(value, str) and not value.isdigit()):
        raise InvalidInput(f"invalid {what} {value!r}: a port number from 1 to 65535")
    port = int(value)
    if not 0 < port < 65536:
        raise InvalidInput(f"invalid {what} {value!r}: a port number from 1 to 65535")
    return port


def _check_login(username: str, password: str, max_username: int, max_password: int, why: str = "") -> None:
    if not username or not password:
        raise InvalidInput("the BMC username and password are required")
    if not _PRINTABLE_RE.match(username) or len(username) > max_username:
        raise InvalidInput(f"invalid BMC username: up to {max_username} printable ASCII characters{why}")
    if not _PRINTABLE_RE.match(password) or len(password) > max_password:
        raise InvalidInput(f"invalid BMC password: up to {max_password} printable ASCII characters{why}")


def check_bmc_login(username: str, password: str) -> None:
    """What an IPMI BMC can hold (see IPMI_MAX_*)."""
    _check_login(username, password, IPMI_MAX_USERNAME, IPMI_MAX_PASSWORD, " (IPMI 2.0's limit)")


# Redfish has no protocol limit of its own; these bound what we store and send.
REDFISH_MAX_USERNAME, REDFISH_MAX_PASSWORD = 64, 128


def check_redfish_login(username: str, password: str) -> None:
    _check_login(username, password, REDFISH_MAX_USERNAME, REDFISH_MAX_PASSWORD)


def validate_name(text: str, what: str = "name") -> str:
    if not _NAME_RE.match(text):
        raise InvalidInput(
            f"invalid {what} {text!r}: use 1-63 lowercase letters, digits and dashes"
        )
    return text


@dataclass(frozen=True)
class BmcCredentials:
    address: str
    port: int
    username: str
    password: Secret
    cipher_suite: int = 17
    driver: BmcDriver = BmcDriver.IPMI
    system: str | None = None  # Redfish: the ComputerSystem's path (None: the BMC's only one)

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"https://{host}:{self.port}" if self.driver == BmcDriver.REDFISH else f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        """The Redfish service's base URL."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"https://{host}:{self.port}"

    def __repr__(self) -> str:
        return f"BmcCredentials({self.endpoint}, user={self.username!r}, password=******)"


def parse_bmc_address(text: str, default_port: int = 623) -> tuple[str, int]:
    """ADDR[:PORT] (IPv6 as [ADDR]:PORT); port 623 (IPMI's) by default."""
    text = text.strip()
    if not text:
        raise InvalidInput("BMC address is empty")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    port = parse_port(port_text, "BMC port") if port_text else default_port
    return parse_host_address(host, "BMC address"), port


def parse_redfish_address(text: str) -> tuple[str, int]:
    """https://HOST[:PORT] (or HOST[:PORT]) for a Redfish BMC; port 443 by default.
    Plain http is refused: a BMC's password never crosses the network in clear."""
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() != "https":
        raise InvalidInput(f"invalid Redfish address {text!r}: Redfish BMCs are reached over https only")
    rest = (rest if sep else text).rstrip("/")
    if "/" in rest:
        raise InvalidInput(f"invalid Redfish address {text!r}: give https://HOST[:PORT]; "
                           "the system path goes in bmc.system")
    return parse_bmc_address(rest, default_port=443)


def parse_system(text: str | None) -> str | None:
    if text is None or text == "":
        return None
    if not isinstance(text, str) or not _SYSTEM_RE.match(text):
        raise InvalidInput(f"invalid Redfish system {text!r}: give its path, /redfish/v1/Systems/<id>")
    return text


@dataclass
class Node:
    id: int
    name: str
    mac: str
    rack: str
    bmc_address: str
    bmc_port: int
    bmc_username: str
    cipher_suite: int
    state: State
    step: Step | None = None
    target_state: State | None = None
    deadline: float | None = None
    last_error: str | None = None
    power_state: str = PowerState.UNKNOWN.value
    agent_last_seen: float | None = None
    boot_count: int = 0
    inspection: dict[str, Any] | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    image_sha256: str | None = None
    previous_image_sha256: str | None = None
    host_last_seen: float | None = None
    host_facts: dict[str, Any] | None = None
    host_key: str | None = None
    host_lost: bool = False
    job_id: int | None = None
    upgrade_domain: int | None = None
    deploy_sha256: str | None = None
    deploy_no_transfer: bool = False
    tags: list[str] = field(default_factory=list)
    bmc_driver: BmcDriver = BmcDriver.IPMI
    bmc_system: str | None = None
    # The firmware enforced UEFI Secure Boot when the node was enrolled (its BMC said so):
    # maintenance boots switch it off (iPXE is not signed), disk boots on again.
    secure_boot: bool = False

    @cached_property
    def hardware(self) -> Hardware | None:
        """The inspection, typed (it was checked when the agent reported it)."""
        return _parsed(Hardware.parse, self.inspection)

    @property
    def boot_mode(self) -> BootMode | None:
        """The firmware's boot mode as inspection found it (None before any inspection)."""
        hardware = self.hardware
        if hardware is None:
            return None
        return BootMode.UEFI if hardware.firmware == "uefi" else BootMode.LEGACY

    @cached_property
    def facts(self) -> HostFacts | None:
        """The host agent's last facts, typed (checked when they were reported)."""
        return _parsed(HostFacts.parse, self.host_facts)

    def public(self) -> dict[str, Any]:
        """The API representation: everything but secrets."""
        return {
            "id": self.id,
            "name": self.name,
            "mac": self.mac,
            "rack": self.rack,
            "bmc": {"driver": self.bmc_driver.value, "address": self.bmc_address, "port": self.bmc_port,
                    "username": self.bmc_username, "cipher_suite": self.cipher_suite,
                    "system": self.bmc_system},
            "secure_boot": self.secure_boot,
            "state": self.state.value,
            "step": self.step.value if self.step else None,
            "target_state": self.target_state.value if self.target_state else None,
            "deadline": self.deadline,
            "last_error": self.last_error,
            "power_state": self.power_state,
            "agent_last_seen": self.agent_last_seen,
            "boot_count": self.boot_count,
            "inspection": self.inspection,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "image_sha256": self.image_sha256,
            "previous_image_sha256": self.previous_image_sha256,
            "host": {"last_seen": self.host_last_seen, "lost": self.host_lost,
                     "facts": self.host_facts, "ssh_host_key": self.host_key},
            "job_id": self.job_id,
            "upgrade_domain": self.upgrade_domain,
            "deploy_sha256": self.deploy_sha256,
            "tags": list(self.tags),
        }


def _parsed(parse: Callable[[Any], T], doc: dict[str, Any] | None) -> T | None:
    if not doc:
        return None
    try:
        return parse(doc)
    except ProvisionerError:
        return None  # written before this shape was checked: as if never reported
