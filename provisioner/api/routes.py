"""The route table: operators' API, agents' API and the boot endpoints iPXE fetches.
Routes validate and delegate; the work lives in workflows/."""

from __future__ import annotations

import hmac
import re
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import InvalidInput, NotFound, Unauthorized
from ..models import (ADDRESS_SCHEMA, IPMI_MAX_PASSWORD, IPMI_MAX_USERNAME, MAC_SCHEMA, NAME_SCHEMA,
                      PORT_SCHEMA, PowerAction)
from ..services import Services
from ..workflows.checks import HostChecks
from ..workflows.consoles import Consoles
from ..workflows.labels import set_labels
from .fleet import fleet_routes
from .guests import guest_routes
from ..statuses import AuthKind
from .http import Request, Response, Route, Router
from .openapi import openapi_document
from .views import deploy_progress, image_ref, node_view

_ARTIFACT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HOST_RE = re.compile(r"^[A-Za-z0-9.:\[\]-]+$")

NODE_BODY = {
    "type": "object", "required": ["mac", "rack", "bmc"],
    "properties": {
        "mac": MAC_SCHEMA, "rack": NAME_SCHEMA, "name": NAME_SCHEMA,
        "inspect": {"type": "boolean", "default": True},
        "bmc": {"type": "object", "required": ["address", "username", "password"],
                "properties": {"address": {**ADDRESS_SCHEMA, "description": "ADDRESS or ADDRESS:PORT"},
                               "port": PORT_SCHEMA,
                               "username": {"type": "string", "minLength": 1, "maxLength": IPMI_MAX_USERNAME},
                               "password": {"type": "string", "minLength": 1, "maxLength": IPMI_MAX_PASSWORD},
                               "cipher_suite": {"type": "integer", "enum": [3, 17]}}},
    },
}


def build_router(svc: Services) -> Router:
    settings = svc.settings

    def authorize(req: Request, kind: str) -> None:
        if kind == AuthKind.NONE:
            return
        if kind == AuthKind.OPERATOR:
            if req.local:
                return  # the unix socket's file mode is the operator's credential
            header = req.headers.get("authorization", "")
            token = header[7:].strip() if header.lower().startswith("bearer ") else ""
            if not token or not hmac.compare_digest(token, svc.operator_token):
                raise Unauthorized("the operator API needs 'Authorization: Bearer <token>' "
                                   f"(the token is in {settings.operator_token_file} on the daemon's host)")
            return
        if kind == AuthKind.HOST:
            req.node = svc.agents.authenticate_host(req.headers.get("x-agent-token"))
            return
        req.node = svc.agents.authenticate(req.headers.get("x-agent-token"))

    router = Router(authorize)

    def node(req: Request) -> Any:
        return svc.store.get_node(req.params["node"])

    def view(n: Any) -> dict[str, Any]:
        doc = node_view(n, settings.agent_lost_after)
        doc["progress"] = deploy_progress(svc.store, n.id, doc["step"])
        doc["image"] = image_ref(svc.store, n.image_sha256)
        return doc

    # -- operators ------------------------------------------------------------
    def list_nodes(req: Request) -> Any:
        rack, tag = req.query.get("rack"), req.query.get("tag")
        nodes = svc.store.list_nodes(rack=rack)
        if rack and not nodes:
            raise NotFound(f"no rack named {rack!r}: see 'provisioner nodes'")
        if tag:
            nodes = [n for n in nodes if tag in n.tags]
        return {"nodes": [view(n) for n in nodes]}

    def create_node(req: Request) -> Any:
        return Response.of_json(view(svc.enroll.enroll(req.json())), status=201)

    def delete_node(req: Request) -> Any:
        svc.store.delete_node(node(req))
        svc.nodes_changed()
        return {"deleted": req.params["node"]}

    def power(req: Request) -> Any:
        body = req.json()
        try:
            action = PowerAction(str(body.get("action")))
        except ValueError as exc:
            raise InvalidInput("action must be one of on, off, cycle, status") from exc
        target = str(body.get("target") or "")
        if not target:
            raise InvalidInput("target is required: a node name, a MAC or a rack")
        return {"results": svc.power.apply(target, action)}

    consoles = Consoles(settings)

    def console(req: Request) -> Any:
        raw = req.query.get("bytes") or "65536"
        if not raw.isdigit() or not 0 < int(raw) <= 16 << 20:
            raise InvalidInput("bytes must be a number from 1 to 16777216")
        return consoles.tail(node(req).name, int(raw))

    checks = HostChecks(settings, svc.store)

    def run_checks(req: Request) -> Any:
        body = req.json()
        names = body.get("nodes")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise InvalidInput("nodes: a list of node names")
        playbook = body.get("playbook")
        if playbook is not None and not isinstance(playbook, str):
            raise InvalidInput("playbook: a path on the daemon's machine")
        return {"results": checks.run(names, playbook)}

    def queue_command(req: Request) -> Any:
        return Response.of_json(svc.agents.queue_command(node(req), str(req.json().get("command"))), 201)

    def get_command(req: Request) -> Any:
        cmd = svc.store.command(req.params["command"])
        if cmd["node_id"] != node(req).id:
            raise NotFound(f"no command {req.params['command']!r} for this node")
        return cmd

    ops = [
        Route("GET", "/v1/health", lambda r: {"status": "ok", "version": __version__}, AuthKind.NONE,
              "Liveness of the daemon"),
        Route("GET", "/v1/openapi.json", lambda r: openapi_document(router.routes), AuthKind.NONE,
              "This document"),
        Route("GET", "/v1/nodes", list_nodes, AuthKind.OPERATOR, "List nodes (?rack=R)"),
        Route("POST", "/v1/nodes", create_node, AuthKind.OPERATOR,
              "Enroll a node by MAC with its BMC and rack; inspection starts unless inspect=false",
              NODE_BODY),
        Route("GET", "/v1/nodes/{node}", lambda r: view(node(r)), AuthKind.OPERATOR,
              "One node by name, id or MAC"),
        Route("DELETE", "/v1/nodes/{node}", delete_node, AuthKind.OPERATOR, "Remove a node in a stable state"),
        Route("GET", "/v1/nodes/{node}/events", lambda r: {"events": svc.store.events(node(r))},
              AuthKind.OPERATOR, "The node's history of transitions"),
        Route("POST", "/v1/checks", run_checks, AuthKind.OPERATOR,
              "Acceptance checks on active hosts: built in over SSH, or a playbook's tasks",
              {"type": "object", "required": ["nodes"],
               "properties": {"nodes": {"type": "array", "items": {"type": "string"}},
                              "playbook": {"type": "string"}}}),
        Route("GET", "/v1/nodes/{node}/console", console, AuthKind.OPERATOR,
              "The tail of a node's serial console log (?bytes=N, default 64 KiB)"),
        Route("POST", "/v1/nodes/{node}/labels", lambda r: view(set_labels(svc.store, node(r), r.json())),
              AuthKind.OPERATOR, "Add or remove tags, set the upgrade domain (a number, or 'auto')",
              {"type": "object", "properties": {"add_tags": {"type": "array"}, "remove_tags": {"type": "array"},
                                                "upgrade_domain": {}}}),
        Route("POST", "/v1/nodes/{node}/inspect", lambda r: view(svc.inspection.start(node(r))),
              AuthKind.OPERATOR, "Boot the node into the maintenance image and inspect it"),
        Route("POST", "/v1/nodes/{node}/commands", queue_command, AuthKind.OPERATOR,
              "Queue a command (poweroff, reboot) for the node's agent",
              {"type": "object", "properties": {"command": {"type": "string", "enum": ["poweroff", "reboot"]}}}),
        Route("GET", "/v1/nodes/{node}/commands/{command}", get_command, AuthKind.OPERATOR,
              "One agent command and its result"),
        Route("POST", "/v1/power", power, AuthKind.OPERATOR,
              "Power on/off/cycle/status a node (name or MAC) or a rack",
              {"type": "object", "required": ["target", "action"],
               "properties": {"target": {"type": "string"},
                              "action": {"type": "string", "enum": ["on", "off", "cycle", "status"]}}}),
        Route("GET", "/v1/racks", lambda r: {"racks": svc.store.racks()}, AuthKind.OPERATOR, "Racks in use"),
        Route("GET", "/v1/discovered", lambda r: {"discovered": svc.store.discovered()}, AuthKind.OPERATOR,
              "Unknown MACs seen by DHCP (dhcp.unknown_macs = discover)"),
        Route("GET", "/v1/stats", lambda r: {"counters": svc.counters.snapshot(),
                                             "dhcp_pid": svc.dhcp.pid if svc.dhcp else None,
                                             "dhcp_restarts": svc.dhcp.restarts if svc.dhcp else 0},
              AuthKind.OPERATOR, "What the boot servers handed out, and the DHCP child's health"),
    ]
    # -- agents ---------------------------------------------------------------
    agents = [
        Route("POST", "/v1/agent/lookup", lambda r: svc.agents.lookup(r.json()), AuthKind.NONE,
              "Agent: find my node by MAC and receive this boot's token (once)",
              {"type": "object", "required": ["mac"], "properties": {"mac": {"type": "string"},
                                                                     "boot": {"type": "string"}}}),
        Route("POST", "/v1/agent/inspection", lambda r: svc.agents.report_inspection(r.node, r.json()),
              AuthKind.AGENT, "Agent: report inspection data", {"type": "object", "required": ["inventory"]}),
        Route("POST", "/v1/agent/heartbeat", lambda r: svc.agents.heartbeat(r.node), AuthKind.AGENT,
              "Agent: I am alive; returns pending commands"),
        Route("POST", "/v1/agent/commands/{command}",
              lambda r: svc.agents.command_result(r.node, r.params["command"], r.json()), AuthKind.AGENT,
              "Agent: report a command's status and result"),
    ]

    # -- boot (iPXE) ------------------------------------------------------------
    def boot_script(req: Request) -> Response:
        name = req.params["script"]
        if not name.endswith(".ipxe"):
            raise NotFound(f"no boot script {name!r}")
        host = req.headers.get("host", "")
        if not _HOST_RE.match(host):
            raise InvalidInput("boot script request without a usable Host header")
        text = svc.netboot.script(name[:-5], f"http://{host}")
        return Response.text(text)

    def artifact(req: Request) -> Response:
        name = req.params["artifact"]
        if not _ARTIFACT_RE.match(name) or ".." in name:
            raise NotFound(f"no boot artifact {name!r}")
        root = (settings.artifacts_dir / "maintenance").resolve()
        path = (root / name).resolve()
        if path.parent != root or not path.is_file():
            raise NotFound(f"no boot artifact {name!r}")
        svc.counters.add(f"http:maintenance/{name}")
        return Response(file=path)

    boot = [
        Route("GET", "/boot/maintenance/{artifact}", artifact, AuthKind.NONE,
              "Maintenance image kernel and initramfs"),
        Route("GET", "/boot/{script}", boot_script, AuthKind.NONE,
              "Per-node iPXE script by MAC (aa-bb-cc-dd-ee-ff.ipxe)"),
    ]
    for route in ops + fleet_routes(svc) + guest_routes(svc) + agents + boot:
        router.add(route)
    return router


def artifact_paths(artifacts_dir: Path) -> list[Path]:
    return [artifacts_dir / "maintenance" / n for n in ("vmlinuz", "initrd.img")]
