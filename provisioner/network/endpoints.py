"""Role endpoints as data, pure: which VIP serves which role on which ports. An endpoint
(a "slot") is named after the role it was made for and keeps its name and VIP for
life; a swap exchanges the roles two slots serve (staging <-> production), so a client
of the production name and VIP reaches the other role's guests from then on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import InvalidInput
from ..guests.roles import Endpoint, Role
from .addresses import GuestNetwork


@dataclass(frozen=True)
class Slot:
    name: str  # its DNS name (under dns.domain) and its HAProxy proxies' prefix
    role: str  # the role whose guests it serves now
    vip: str
    ports: tuple[Endpoint, ...]

    def doc(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "vip": self.vip, "ports": [p.doc() for p in self.ports]}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Slot":
        return cls(row["name"], row["role"], row["vip"], tuple(Endpoint.from_doc(p) for p in row["ports"]))

    def shape(self) -> tuple[tuple[int, str], ...]:
        """What a swap partner must offer: the same ports, by protocol."""
        return tuple(sorted((p.port, str(p.protocol)) for p in self.ports))


def plan_slots(roles: list[Role], existing: list[Slot], network: GuestNetwork | None,
               reserved: Mapping[int, str]) -> list[Slot]:
    """The endpoints the roles file asks for: a role keeps the slot that serves it (its VIP
    and name, swapped or not), takes new ports as declared, and gets a new slot with the
    lowest free VIP when it has none. Roles gone or without endpoints lose theirs.
    reserved: ports the provisioner itself listens on, on every address, and what for."""
    serving = {s.role: s for s in existing}
    out: list[Slot] = []
    for role in roles:
        for endpoint in role.endpoints:
            if endpoint.port in reserved:
                raise InvalidInput(f"role {role.name}: endpoint port {endpoint.port} clashes with the "
                                   f"provisioner's own {reserved[endpoint.port]} on every address; choose another "
                                   "port; nothing was changed")
        if not role.endpoints:
            continue
        if network is None:
            raise InvalidInput(f"role {role.name} declares endpoints, but no guest network is configured "
                               "(network.subnet, network.guest_range, network.endpoint_range)")
        slot = serving.get(role.name)
        if slot is not None:
            out.append(Slot(slot.name, role.name, slot.vip, role.endpoints))
    names = {s.name for s in out}
    for role in roles:
        if not role.endpoints or role.name in {s.role for s in out}:
            continue
        assert network is not None
        if role.name in names:
            raise InvalidInput(f"role {role.name}: the endpoint name {role.name} is held by the endpoint that "
                               "serves another role since a swap; rename the role; nothing was changed")
        vip = network.allocate_vip([s.vip for s in out], f"role {role.name}'s endpoint")
        out.append(Slot(role.name, role.name, vip, role.endpoints))
        names.add(role.name)
    return sorted(out, key=lambda s: s.name)


def swap(slots: list[Slot], a: str, b: str) -> tuple[Slot, Slot]:
    """The two roles' slots after the swap. Refused (nothing changed) unless both roles have
    an endpoint and their ports match."""
    if a == b:
        raise InvalidInput(f"swap needs two different roles, not {a} twice")
    by_role = {s.role: s for s in slots}
    for role in (a, b):
        if role not in by_role:
            raise InvalidInput(f"role {role} has no endpoint to swap (see 'provisioner endpoints')")
    sa, sb = by_role[a], by_role[b]
    if sa.shape() != sb.shape():
        def show(s: Slot) -> str:
            return ", ".join(f"{port}/{proto}" for port, proto in s.shape())
        raise InvalidInput(f"roles {a} and {b} have different endpoints ({a}: {show(sa)}; {b}: {show(sb)}): "
                           "a swap needs the same ports and protocols; nothing was changed")
    return (Slot(sa.name, b, sa.vip, sb.ports), Slot(sb.name, a, sb.vip, sa.ports))
