"""Placement: which host runs which guest, on which dedicated cores. Pure planning, no
side effects; the plan is all or nothing (a guest that fits nowhere fails the whole
plan, naming the shortfall).

Guests are named ROLE-N. Guests already placed stay where they are; a smaller count
removes the highest numbers; new guests go, per role, to the rack (then the host) with
the fewest of that role, then to the host with the most free cores. Cores are never
shared: each guest gets its own, and each host keeps `reserved_cores` (the lowest
numbers) and `reserved_memory_mib` for itself."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidInput
from .roles import Role


@dataclass(frozen=True)
class Host:
    name: str
    rack: str
    cores: int
    memory_mib: int


@dataclass(frozen=True)
class Guest:
    name: str
    role: str
    index: int
    host: str
    cores: tuple[int, ...]
    memory_mib: int
    upgrade_domain: int


@dataclass
class Plan:
    keep: list[Guest] = field(default_factory=list)
    add: list[Guest] = field(default_factory=list)
    remove: list[Guest] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return bool(self.add or self.remove)


@dataclass
class _Room:
    host: Host
    free_cores: set[int]
    free_memory: int


def guest_name(role: str, index: int) -> str:
    return f"{role}-{index}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def place(roles: list[Role], hosts: list[Host], existing: list[Guest], *, reserved_cores: int = 1,
          reserved_memory_mib: int = 512) -> Plan:
    if not hosts and any(r.count for r in roles):
        raise InvalidInput("no active host to place guests on: reimage some nodes first ('provisioner reimage')")
    by_role = {r.name: r for r in roles}
    rooms = {h.name: _Room(h, set(range(min(reserved_cores, h.cores), h.cores)),
                           h.memory_mib - reserved_memory_mib) for h in hosts}
    plan = Plan()
    for guest in sorted(existing, key=lambda g: (g.role, g.index)):
        role = by_role.get(guest.role)
        if role is None or guest.index > role.count or guest.host not in rooms:
            plan.remove.append(guest)
            continue
        plan.keep.append(guest)
        room = rooms[guest.host]
        room.free_cores -= set(guest.cores)
        room.free_memory -= guest.memory_mib
    for role in roles:
        _check_fits_somewhere(role, hosts, reserved_cores, reserved_memory_mib)
        have = {g.index for g in plan.keep if g.role == role.name}
        for index in range(1, role.count + 1):
            if index in have:
                continue
            chosen = _choose(role, rooms, plan)
            if chosen is None:
                best = max(rooms.values(), key=lambda r: (len(r.free_cores), r.free_memory))
                raise InvalidInput(
                    f"role {role.name}: no room for {guest_name(role.name, index)}, which needs "
                    f"{_plural(role.vcpus, 'core')} and {role.memory_mib} MiB: the most free is "
                    f"{best.host.name} with {_plural(len(best.free_cores), 'core')} and {best.free_memory} MiB "
                    f"(short by {_plural(max(0, role.vcpus - len(best.free_cores)), 'core')} and "
                    f"{max(0, role.memory_mib - best.free_memory)} MiB); nothing was changed")
            cores = tuple(sorted(chosen.free_cores)[:role.vcpus])
            chosen.free_cores -= set(cores)
            chosen.free_memory -= role.memory_mib
            plan.add.append(Guest(guest_name(role.name, index), role.name, index, chosen.host.name, cores,
                                  role.memory_mib, (index - 1) % role.upgrade_domains))
    return plan


def _check_fits_somewhere(role: Role, hosts: list[Host], reserved_cores: int, reserved_memory_mib: int) -> None:
    """A guest bigger than every host, empty, is a mistake in the file, not a full fleet."""
    if not role.count or not hosts:
        return
    biggest = max(hosts, key=lambda h: (h.cores, h.memory_mib))
    cores, memory = biggest.cores - reserved_cores, biggest.memory_mib - reserved_memory_mib
    if role.vcpus > cores or role.memory_mib > memory:
        raise InvalidInput(
            f"role {role.name} needs {_plural(role.vcpus, 'core')} and {role.memory_mib} MiB per guest; the "
            f"biggest host, {biggest.name}, has {_plural(max(cores, 0), 'core')} and {max(memory, 0)} MiB for "
            f"guests ({biggest.cores} cores and {biggest.memory_mib} MiB, less {reserved_cores} and "
            f"{reserved_memory_mib} MiB kept for the host): short by "
            f"{_plural(max(0, role.vcpus - cores), 'core')} and {max(0, role.memory_mib - memory)} MiB")


def _choose(role: Role, rooms: dict[str, _Room], plan: Plan) -> _Room | None:
    fits = [r for r in rooms.values() if len(r.free_cores) >= role.vcpus and r.free_memory >= role.memory_mib]
    if not fits:
        return None
    placed = [g for g in plan.keep + plan.add if g.role == role.name]
    on_host = {name: sum(1 for g in placed if g.host == name) for name in rooms}
    on_rack: dict[str, int] = {}
    for g in placed:
        rack = rooms[g.host].host.rack
        on_rack[rack] = on_rack.get(rack, 0) + 1

    def key(r: _Room) -> tuple[int, int, int, str]:
        if role.spread == "none":  # pack: the fullest host that still fits
            return (0, 0, len(r.free_cores), r.host.name)
        rack_count = on_rack.get(r.host.rack, 0) if role.spread == "rack" else 0
        return (rack_count, on_host[r.host.name], -len(r.free_cores), r.host.name)

    return min(fits, key=key)
