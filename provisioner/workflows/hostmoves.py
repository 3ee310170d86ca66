"""Guest-aware reimage and rollback: a host's disk is laid down again only once its guests
are out of the way. The plan batches the hosts so that no role loses more than one
upgrade domain's worth of guests at once (ceil(count / upgrade_domains): its minimum is
the rest), and refuses a host that alone holds more (unless forced). Before a batch's
nodes go, each of their guests is drained from its endpoint and moved to a host outside
the job (healing.on_reimage = move), keeping its name, address and endpoint; one that fits
nowhere else (or every one, with on_reimage = stop) is stopped and made again on its host
once the host is back. The moves come from the roles file last deployed, so a dry run
shows them exactly."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from ..config import Settings
from ..errors import Conflict, InvalidInput
from ..guests.roles import Role
from ..models import Node
from ..statuses import JobKind, PlanAction
from ..store import Store
from .guests import GuestService


def allowed_out(role: Role) -> int:
    """How many of a role's guests may be down at once: one upgrade domain's worth."""
    return max(1, math.ceil(role.count / max(1, role.upgrade_domains)))


def split_batches(batches: list[list[Node]], guests_on: dict[str, list[dict[str, Any]]],
                  roles: dict[str, Role]) -> tuple[list[list[Node]], list[str]]:
    """The job's batches, split where their hosts together run more of a role than may be
    down at once; and, for each host that alone runs more, why that is refused."""
    out: list[list[Node]] = []
    refused: list[str] = []
    for batch in batches:
        current: list[Node] = []
        load: Counter[str] = Counter()
        for node in batch:
            mine = Counter(g["role"] for g in guests_on.get(node.name, []) if g["role"] in roles)
            for name, n in sorted(mine.items()):
                role = roles[name]
                if n > allowed_out(role):
                    refused.append(f"{node.name} runs {n} of role {name}'s {role.count} guests: reimaging it takes "
                                   f"them down at once, leaving {role.count - n}, below the role's minimum of "
                                   f"{role.count - allowed_out(role)} (one upgrade domain's worth may be down)")
            if current and any(load[r] + n > allowed_out(roles[r]) for r, n in mine.items()):
                out.append(current)
                current, load = [], Counter()
            current.append(node)
            load.update(mine)
        if current:
            out.append(current)
    return out, refused


class HostMoves:
    def __init__(self, settings: Settings, store: Store, guests: GuestService) -> None:
        self.settings = settings
        self.store = store
        self.guests = guests

    def plan(self, batches: list[list[Node]], kind: JobKind, force: bool
             ) -> tuple[list[list[Node]], list[dict[str, Any]]]:
        """The batches (split as the roles need) and the guest entries of a reimage or
        rollback job, each tagged with its node batch. Conflict when a role would go below
        its minimum and the job is not forced; InvalidInput when guests run on the hosts
        and no roles file is on record."""
        done = "rolled back" if kind == JobKind.ROLLBACK else "reimaged"
        hosts = {n.name for batch in batches for n in batch}
        on = [g for g in self.store.guests() if g["host"] in hosts]
        if not on:
            return batches, []
        body = self.store.last_deployment()
        if body is None:
            raise InvalidInput(f"guests run on {', '.join(sorted({g['host'] for g in on}))} but no roles file is on "
                               "record to place them by: deploy it again first ('provisioner deploy ROLES')")
        roles = {r.name: r for r in self.guests.roles_of(body)}
        guests_on: dict[str, list[dict[str, Any]]] = {}
        for g in on:
            guests_on.setdefault(g["host"], []).append(g)
        batches, refused = split_batches(batches, guests_on, roles)
        if refused and not force:
            raise Conflict(f"cannot {kind}: " + "; ".join(refused) + "; nothing was changed (--force does it anyway)")
        index = {n.name: i for i, batch in enumerate(batches) for n in batch}
        moves: dict[str, dict[str, Any]] = {}
        no_room = "healing.on_reimage is stop"
        if self.settings.healing_on_reimage == "move":
            try:
                plan = self.guests.plan(body, away={h: f"its host {h} was {done}" for h in hosts})
                moves = {e["guest"]: e for e in plan["entries"]
                         if e["action"] == PlanAction.MOVE and e["spec"]["old_host"] in hosts}
            except InvalidInput as exc:
                no_room = f"no room on the other hosts ({exc})".replace("; nothing was changed", "")
        stays = {e["guest"]: e for e in self.guests.plan(body)["entries"] if e["action"] != PlanAction.REMOVE} \
            if len(moves) < len(on) else {}
        entries = []
        for g in sorted(on, key=lambda g: g["name"]):
            if g["name"] in moves:
                entry = moves[g["name"]]
            elif g["name"] in stays:
                entry = {**stays[g["name"]], "action": PlanAction.STOP, "host": g["host"]}
                entry["spec"] = {**entry["spec"], "because": no_room, "was": g["state"]}
            else:
                continue  # the roles file no longer has it: it goes with its host's disk
            entries.append({**entry, "batch": index[g["host"]]})
        return batches, entries


def moves_doc(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a dry run shows of a job's guests."""
    return [{"guest": e["guest"], "role": e["spec"]["guest"]["role"], "action": str(e["action"]),
             "batch": e["batch"], "from": e["spec"].get("old_host") or e["host"], "to": e["host"],
             "why": e["spec"].get("because") or ""} for e in sorted(entries, key=lambda e: (e["batch"], e["guest"]))]
