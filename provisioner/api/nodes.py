"""Routes for nodes (enroll, list, show, delete, events, console, labels, inspect, agent
commands), power, racks, discovered MACs, checks and the boot servers' counters."""

from __future__ import annotations

import time
from typing import Any

from ..errors import InvalidInput, NotFound
from ..models import (ADDRESS_SCHEMA, IPMI_MAX_PASSWORD, IPMI_MAX_USERNAME, MAC_SCHEMA, NAME_SCHEMA,
                      PORT_SCHEMA, REDFISH_MAX_PASSWORD, REDFISH_MAX_USERNAME, SYSTEM_SCHEMA, BmcDriver, Node,
                      PowerAction)
from ..services import Services
from ..states import State
from ..statuses import AuthKind
from ..workflows.checks import HostChecks
from ..workflows.consoles import Consoles
from ..workflows.labels import set_labels
from .http import Request, Response, Route
from .views import cursor_for, cursor_of, deploy_progress, image_ref, image_refs, node_view, page_limit

NODE_BODY = {
    "type": "object", "required": ["mac", "rack", "bmc"],
    "properties": {
        "mac": MAC_SCHEMA, "rack": NAME_SCHEMA, "name": NAME_SCHEMA,
        "inspect": {"type": "boolean", "default": True},
        "bmc": {"type": "object", "required": ["address", "username", "password"],
                "properties": {"driver": {"type": "string", "enum": [d.value for d in BmcDriver],
                                          "description": "default: detected, Redfish first, then IPMI"},
                               "address": {**ADDRESS_SCHEMA, "maxLength": 300,
                                           "description": "ADDRESS, ADDRESS:PORT or https://ADDRESS[:PORT]"},
                               "port": PORT_SCHEMA,
                               "username": {"type": "string", "minLength": 1, "maxLength": REDFISH_MAX_USERNAME,
                                            "description": f"IPMI: up to {IPMI_MAX_USERNAME} characters"},
                               "password": {"type": "string", "minLength": 1, "maxLength": REDFISH_MAX_PASSWORD,
                                            "description": f"IPMI: up to {IPMI_MAX_PASSWORD} characters"},
                               "cipher_suite": {"type": "integer", "enum": [3, 17]},
                               "system": SYSTEM_SCHEMA}},
    },
}
CHECKS_BODY = {"type": "object", "required": ["nodes"],
               "properties": {"nodes": {"type": "array", "items": {"type": "string"}},
                              "playbook": {"type": "string"}}}
LABELS_BODY = {"type": "object", "properties": {"add_tags": {"type": "array"}, "remove_tags": {"type": "array"},
                                                "upgrade_domain": {}}}
COMMAND_BODY = {"type": "object", "properties": {"command": {"type": "string", "enum": ["poweroff", "reboot"]}}}
POWER_BODY = {"type": "object", "required": ["target", "action"],
              "properties": {"target": {"type": "string"},
                             "action": {"type": "string", "enum": ["on", "off", "cycle", "status"]}}}


def console_bytes(req: Request) -> int:
    raw = req.query.get("bytes") or "65536"
    if not raw.isdigit() or not 0 < int(raw) <= 16 << 20:
        raise InvalidInput("bytes must be a number from 1 to 16777216")
    return int(raw)


class NodeRoutes:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.consoles = Consoles(svc.settings)
        self.checks = HostChecks(svc.settings, svc.store)

    def node(self, req: Request) -> Node:
        return self.svc.store.get_node(req.params["node"])

    def view(self, node: Node, refs: dict[str, str] | None = None) -> dict[str, Any]:
        doc = node_view(node, self.svc.settings.agent_lost_after)
        doc["progress"] = deploy_progress(self.svc.store, node.id, doc["step"])
        doc["image"] = image_ref(self.svc.store, node.image_sha256, refs)
        return doc

    def listing(self, req: Request) -> Any:
        """A page of nodes in (rack, name) order; `next` is the cursor of the following
        page (null on the last). Each page costs one range read of the index."""
        rack, tag, state = req.query.get("rack"), req.query.get("tag"), req.query.get("state")
        if state is not None and state not in {s.value for s in State}:
            raise InvalidInput(f"state must be one of {', '.join(s.value for s in State)}")
        limit = page_limit(req, default=500, most=5000)
        after = cursor_of(req.query.get("cursor"))
        nodes = self.svc.store.page_nodes(rack=rack, state=state, tag=tag, after=after, limit=limit + 1)
        if rack and not nodes and after is None and rack not in self.svc.store.racks():
            raise NotFound(f"no rack named {rack!r}: see 'provisioner nodes'")
        page, more = nodes[:limit], len(nodes) > limit
        refs = image_refs(self.svc.store)
        return {"nodes": [self.view(n, refs) for n in page],
                "next": cursor_for(page[-1].rack, page[-1].name) if more else None}

    def feed(self, req: Request) -> Any:
        """Events after the cursor `after`, oldest first; with `wait`, held open up to that
        many seconds until one comes: what a live view follows instead of polling."""
        raw = req.query.get("after", "0")
        if not raw.isdigit() or len(raw) > 18:
            raise InvalidInput("after must be an event id (a whole number); 0 for the start")
        after = int(raw)
        wait_raw = req.query.get("wait", "0")
        try:
            wait = float(wait_raw)
        except ValueError as exc:
            raise InvalidInput("wait must be seconds, from 0 to 30") from exc
        if not 0 <= wait <= 30:
            raise InvalidInput("wait must be seconds, from 0 to 30")
        limit = page_limit(req, default=500, most=5000)
        node_id = self.svc.store.get_node(req.query["node"]).id if req.query.get("node") else None
        store = self.svc.store
        end = time.monotonic() + wait
        while True:
            generation = store.event_generation
            events = store.feed(after, limit, node_id)
            left = end - time.monotonic()
            if events or left <= 0:
                break
            store.wait_events(generation, min(left, 5.0))
        return {"events": events, "next": events[-1]["id"] if events else after, "last": store.last_event_id()}

    def health(self, node: Node) -> dict[str, Any] | None:
        """What the host watch last said of the node (its health, fencing or healing)."""
        said = [e for e in self.svc.store.events(node) if e["event"] in ("health", "fence", "heal")]
        return {"at": said[-1]["ts"], "what": said[-1]["event"], "message": said[-1]["message"]} if said else None

    def create(self, req: Request) -> Any:
        return Response.of_json(self.view(self.svc.enroll.enroll(req.json())), status=201)

    def show(self, req: Request) -> Any:
        node = self.node(req)
        doc = self.view(node)
        doc["health"] = self.health(node)
        doc["controller"] = self.svc.store.rack_holder(node.rack)  # the one that works this node
        return doc

    def delete(self, req: Request) -> Any:
        self.svc.enroll.delete(self.node(req))
        return {"deleted": req.params["node"]}

    def events(self, req: Request) -> Any:
        return {"events": self.svc.store.events(self.node(req))}

    def console(self, req: Request) -> Any:
        return self.consoles.tail(self.node(req).name, console_bytes(req))

    def labels(self, req: Request) -> Any:
        return self.view(set_labels(self.svc.store, self.node(req), req.json()))

    def inspect(self, req: Request) -> Any:
        return self.view(self.svc.inspection.start(self.node(req)))

    def queue_command(self, req: Request) -> Any:
        command = self.svc.agents.queue_command(self.node(req), str(req.json().get("command")))
        return Response.of_json(command, 201)

    def command(self, req: Request) -> Any:
        cmd = self.svc.store.command(req.params["command"])
        if cmd["node_id"] != self.node(req).id:
            raise NotFound(f"no command {req.params['command']!r} for this node")
        return cmd

    def power(self, req: Request) -> Any:
        body = req.json()
        try:
            action = PowerAction(str(body.get("action")))
        except ValueError as exc:
            raise InvalidInput("action must be one of on, off, cycle, status") from exc
        target = str(body.get("target") or "")
        if not target:
            raise InvalidInput("target is required: a node name, a MAC or a rack")
        return {"results": self.svc.power.apply(target, action)}

    def run_checks(self, req: Request) -> Any:
        body = req.json()
        names = body.get("nodes")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise InvalidInput("nodes: a list of node names")
        playbook = body.get("playbook")
        if playbook is not None and not isinstance(playbook, str):
            raise InvalidInput("playbook: a path on the daemon's machine")
        return {"results": self.checks.run(names, playbook)}

    def racks(self, req: Request) -> Any:
        counts: dict[str, dict[str, int]] = {}
        for (rack, state), n in self.svc.store.tally_nodes():
            counts.setdefault(rack, {})[state] = n
        return {"racks": self.svc.store.racks(), "nodes": counts}

    def discovered(self, req: Request) -> Any:
        return {"discovered": self.svc.store.discovered()}

    def stats(self, req: Request) -> Any:
        dhcp = self.svc.dhcp
        return {"counters": self.svc.counters.snapshot(), "dhcp_pid": dhcp.pid if dhcp else None,
                "dhcp_restarts": dhcp.restarts if dhcp else 0}

    def routes(self) -> list[Route]:
        op = AuthKind.OPERATOR
        return [
            Route("GET", "/v1/nodes", self.listing, op,
                  "A page of nodes (?rack=R&state=S&tag=T&limit=N&cursor=C; 'next' is the next page's cursor)"),
            Route("GET", "/v1/events", self.feed, op,
                  "The fleet's events after an event id (?after=ID&wait=S&limit=N&node=NAME); "
                  "'next' is the cursor to follow, 'last' the newest event's id"),
            Route("POST", "/v1/nodes", self.create, op,
                  "Enroll a node by MAC with its BMC and rack; inspection starts unless inspect=false", NODE_BODY),
            Route("GET", "/v1/nodes/{node}", self.show, op, "One node by name, id or MAC"),
            Route("DELETE", "/v1/nodes/{node}", self.delete, op, "Remove a node in a stable state"),
            Route("GET", "/v1/nodes/{node}/events", self.events, op, "The node's history of transitions"),
            Route("POST", "/v1/checks", self.run_checks, op,
                  "Acceptance checks on active hosts: built in over SSH, or a playbook's tasks", CHECKS_BODY),
            Route("GET", "/v1/nodes/{node}/console", self.console, op,
                  "The tail of a node's serial console log (?bytes=N, default 64 KiB)"),
            Route("POST", "/v1/nodes/{node}/labels", self.labels, op,
                  "Add or remove tags, set the upgrade domain (a number, or 'auto')", LABELS_BODY),
            Route("POST", "/v1/nodes/{node}/inspect", self.inspect, op,
                  "Boot the node into the maintenance image and inspect it"),
            Route("POST", "/v1/nodes/{node}/commands", self.queue_command, op,
                  "Queue a command (poweroff, reboot) for the node's agent", COMMAND_BODY),
            Route("GET", "/v1/nodes/{node}/commands/{command}", self.command, op,
                  "One agent command and its result"),
            Route("POST", "/v1/power", self.power, op,
                  "Power on/off/cycle/status a node (name or MAC) or a rack", POWER_BODY),
            Route("GET", "/v1/racks", self.racks, op, "Racks in use, with their nodes counted by state"),
            Route("GET", "/v1/discovered", self.discovered, op,
                  "Unknown MACs seen by DHCP (dhcp.unknown_macs = discover)"),
            Route("GET", "/v1/stats", self.stats, op,
                  "What the boot servers handed out, and the DHCP child's health"),
        ]
