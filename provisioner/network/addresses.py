"""The guest network as settings describe it, parsed once: a subnet, its gateway, a range
of guest addresses and a range of endpoint VIPs. Allocation is pure: the lowest free
address of a range, and a MAC made from the address, so both stay with a guest for its
whole life (rolls, moves and resets keep them)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

from ..errors import ConfigError, InvalidInput

IPv4 = ipaddress.IPv4Address


@dataclass(frozen=True)
class AddressRange:
    first: IPv4
    last: IPv4

    @classmethod
    def parse(cls, text: str, setting: str) -> "AddressRange":
        low, sep, high = text.replace(",", "-").partition("-")
        try:
            first, last = IPv4(low.strip()), IPv4((high if sep else low).strip())
        except ValueError as exc:
            raise ConfigError(f"{setting} must be a range like 10.99.0.20-10.99.0.59, not {text!r}") from exc
        if last < first:
            raise ConfigError(f"{setting} {text!r}: its last address comes before its first")
        return cls(first, last)

    def __contains__(self, address: object) -> bool:
        return isinstance(address, IPv4) and self.first <= address <= self.last

    def __len__(self) -> int:
        return int(self.last) - int(self.first) + 1

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    def overlaps(self, other: "AddressRange") -> bool:
        return self.first <= other.last and other.first <= self.last

    def addresses(self) -> Iterable[IPv4]:
        for n in range(int(self.first), int(self.last) + 1):
            yield IPv4(n)


@dataclass(frozen=True)
class GuestNetwork:
    subnet: ipaddress.IPv4Network
    gateway: IPv4 | None
    guests: AddressRange
    endpoints: AddressRange | None  # None: no role endpoints

    @property
    def prefix(self) -> int:
        return self.subnet.prefixlen

    def allocate(self, taken: Iterable[str], what: str) -> str:
        return _lowest_free(self.guests, taken, "network.guest_range", what)

    def allocate_vip(self, taken: Iterable[str], what: str) -> str:
        if self.endpoints is None:
            raise InvalidInput(f"{what} declares endpoints, but network.endpoint_range is not set")
        return _lowest_free(self.endpoints, taken, "network.endpoint_range", what)


def _lowest_free(span: AddressRange, taken: Iterable[str], setting: str, what: str) -> str:
    used = {IPv4(a) for a in taken if a}
    for address in span.addresses():
        if address not in used:
            return str(address)
    raise InvalidInput(f"{setting} {span} is exhausted: all {len(span)} addresses are taken, none left for "
                       f"{what}; widen it or remove something that holds one; nothing was changed")


def mac_for(address: str) -> str:
    """A locally administered MAC from the guest's address: stable, and unique on the subnet."""
    a, b, c, d = IPv4(address).packed
    return f"52:54:{a:02x}:{b:02x}:{c:02x}:{d:02x}"


def parse(subnet: str, gateway: str, guest_range: str, endpoint_range: str,
          dhcp_range: str | None) -> GuestNetwork | None:
    """The guest network, or None when it is not configured (guests get a user-mode NIC).
    dhcp_range: the provisioning network's DHCP addresses, which the guests' must avoid."""
    if not guest_range and not endpoint_range and not subnet:
        return None
    if not subnet or not guest_range:
        raise ConfigError("the guest network needs network.subnet and network.guest_range (and, for role "
                          "endpoints, network.endpoint_range)")
    try:
        net = ipaddress.IPv4Network(subnet, strict=False)
    except ValueError as exc:
        raise ConfigError(f"network.subnet must be a network like 10.99.0.0/24: {exc}") from exc
    try:
        gw = IPv4(gateway) if gateway else None
    except ValueError as exc:
        raise ConfigError(f"network.gateway must be an address: {exc}") from exc
    guests = AddressRange.parse(guest_range, "network.guest_range")
    endpoints = AddressRange.parse(endpoint_range, "network.endpoint_range") if endpoint_range else None
    for setting, span in (("network.guest_range", guests), ("network.endpoint_range", endpoints)):
        if span is None:
            continue
        if span.first not in net or span.last not in net:
            raise ConfigError(f"{setting} {span} is not inside network.subnet {net}")
        if span.first == net.network_address or span.last == net.broadcast_address:
            raise ConfigError(f"{setting} {span} holds {net}'s network or broadcast address")
        if gw is not None and gw in span:
            raise ConfigError(f"{setting} {span} holds the gateway {gw}")
        if dhcp_range:
            try:
                provisioning = AddressRange.parse(dhcp_range, "dhcp.range")
            except ConfigError:
                continue  # dhcp.range is judged by its own check
            if span.overlaps(provisioning):
                raise ConfigError(f"{setting} {span} overlaps the provisioning network's DHCP range "
                                  f"(dhcp.range {provisioning}): guests and nodes would be handed the same "
                                  "addresses; give the guests addresses outside it")
    if endpoints is not None and guests.overlaps(endpoints):
        raise ConfigError(f"network.guest_range {guests} overlaps network.endpoint_range {endpoints}")
    return GuestNetwork(net, gw, guests, endpoints)


def network_config(address: str, mac: str, prefix: int, gateway: str | None) -> str:
    """cloud-init's network-config (version 2) for the guest's one NIC, matched by MAC.
    Real cloud images read it as it is; the test guest image reads these lines with sed."""
    lines = ["version: 2", "ethernets:", "  guest0:", "    match:", f"      macaddress: \"{mac}\"",
             "    set-name: eth0", f"    addresses: [{address}/{prefix}]"]
    if gateway:
        lines.append(f"    gateway4: {gateway}")
    return "\n".join(lines) + "\n"
