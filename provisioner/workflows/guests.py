"""Guests per role, the provisioner's side: a roles file becomes a placement over the
active hosts (their CPU and memory as their host agents report them), every image it
names resolved in the catalog first. All checks happen before anything is created."""

from __future__ import annotations

from typing import Any

from ..errors import Conflict, InvalidInput, NotFound
from ..guests.placement import Guest, Host, Plan, place
from ..guests.roles import Role, parse_roles
from ..images import Catalog
from ..states import State
from .engine import Conductor


def _guest_doc(g: Guest, roles: dict[str, Role], images: dict[str, Any]) -> dict[str, Any]:
    role = roles.get(g.role)
    return {"name": g.name, "role": g.role, "host": g.host, "cores": list(g.cores), "memory_mib": g.memory_mib,
            "upgrade_domain": g.upgrade_domain,
            "base": images[role.base]["ref"] if role else None,
            "app": images[role.app]["ref"] if role and role.app else None}


class GuestService:
    def __init__(self, conductor: Conductor, catalog: Catalog) -> None:
        self.c = conductor
        self.catalog = catalog

    def hosts(self) -> list[Host]:
        """Active nodes whose host agent has reported its CPUs and memory."""
        hosts = []
        for node in self.c.store.list_nodes():
            facts = node.host_facts or {}
            cores = (facts.get("cpu") or {}).get("count")
            memory = (facts.get("memory") or {}).get("usable_mib") or (facts.get("memory") or {}).get("total_mib")
            if node.state == State.ACTIVE and not node.host_lost and isinstance(cores, int) and \
                    isinstance(memory, int):
                hosts.append(Host(node.name, node.rack, cores, memory))
        return hosts

    def plan(self, body: dict[str, Any], hosts: list[Host]) -> tuple[list[Role], Plan, dict[str, Any]]:
        text = body.get("roles")
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("send the roles file's text as 'roles'")
        templates = body.get("templates") or {}
        if not isinstance(templates, dict):
            raise InvalidInput("'templates' must map template names to their text")

        def read(name: str) -> str:
            if name not in templates:
                raise InvalidInput(f"the user_data template {name!r} was not sent")
            return str(templates[name])

        roles = parse_roles(text, source=str(body.get("source") or "roles file"), read=read)
        images: dict[str, Any] = {}
        for role in roles:
            for ref in filter(None, (role.base, role.app)):
                try:
                    image = self.catalog.resolve(ref)
                except NotFound as exc:
                    raise InvalidInput(f"role {role.name}: unknown image {ref!r} (see 'provisioner image list')") \
                        from exc
                images[ref] = {"ref": image.ref, "sha256": image.sha256}
        plan = place(roles, hosts, [], reserved_cores=self.c.settings.guests_reserved_cores,
                     reserved_memory_mib=self.c.settings.guests_reserved_memory_mib)
        return roles, plan, images

    def deploy(self, body: dict[str, Any]) -> dict[str, Any]:
        hosts = self.hosts()
        roles, plan, images = self.plan(body, hosts)
        by_name = {r.name: r for r in roles}
        doc = {"hosts": [h.__dict__ for h in hosts],
               "keep": [_guest_doc(g, by_name, images) for g in plan.keep],
               "add": [_guest_doc(g, by_name, images) for g in plan.add],
               "remove": [_guest_doc(g, by_name, images) for g in plan.remove],
               "dry_run": bool(body.get("dry_run"))}
        if not body.get("dry_run"):
            raise Conflict("creating the guests is not built yet (issue 4 is in progress): "
                           "'provisioner deploy --dry-run' shows the placement")
        return doc
