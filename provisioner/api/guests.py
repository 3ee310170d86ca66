"""Routes for guests (deploy a roles file, list, show, reset, delete, console) and the
hypervisor hosts they run on (list, register, remove, gc)."""

from __future__ import annotations

from typing import Any

from ..models import ADDRESS_SCHEMA, NAME_SCHEMA, PORT_SCHEMA
from ..services import Services
from ..statuses import AuthKind
from .http import Request, Response, Route
from .nodes import console_bytes

DEPLOY_BODY = {"type": "object", "required": ["roles"],
               "properties": {"roles": {"type": "string"}, "templates": {"type": "object"},
                              "source": {"type": "string"}, "dry_run": {"type": "boolean"}}}
HOST_BODY = {"type": "object", "required": ["name", "address", "rack", "host_key"],
             "properties": {"name": NAME_SCHEMA, "address": ADDRESS_SCHEMA,
                            "port": PORT_SCHEMA, "rack": NAME_SCHEMA,
                            "bridge": {"type": "string", "description": "the bridge guests' NICs join on it"},
                            "host_key": {"type": "string", "description": "TYPE BASE64, as in a .pub file"}}}

SWAP_BODY = {"type": "object", "required": ["roles"],
             "properties": {"roles": {"type": "array", "items": NAME_SCHEMA, "minItems": 2, "maxItems": 2},
                            "dry_run": {"type": "boolean"}}}


def guest_name(req: Request) -> str:
    return req.params["guest"]


class GuestRoutes:
    """Guests (deploy a roles file, list, show, reset, delete, console) and their hosts."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.guests = svc.guests

    def deploy(self, req: Request) -> Any:
        doc = self.guests.deploy(req.json())
        return Response.of_json(doc, status=201 if doc.get("job") else 200)

    def listing(self, req: Request) -> Any:
        return {"guests": self.svc.store.guests(host=req.query.get("host") or None,
                                                role=req.query.get("role") or None)}

    def show(self, req: Request) -> Any:
        return self.guests.show(guest_name(req))

    def reset(self, req: Request) -> Any:
        return self.guests.reset(guest_name(req))

    def delete(self, req: Request) -> Any:
        return self.guests.delete(guest_name(req))

    def console(self, req: Request) -> Any:
        text = self.guests.console(guest_name(req), console_bytes(req)).decode(errors="replace")
        return {"guest": guest_name(req), "text": text}

    def hosts(self, req: Request) -> Any:
        return {"hosts": self.guests.host_list()}

    def add_host(self, req: Request) -> Any:
        return Response.of_json(self.guests.add_host(req.json()), status=201)

    def remove_host(self, req: Request) -> Any:
        return self.guests.remove_host(req.params["host"])

    def gc(self, req: Request) -> Any:
        return self.guests.gc(req.params["host"])

    def endpoints(self, req: Request) -> Any:
        return {"endpoints": self.svc.endpoints.listing()}

    def swap(self, req: Request) -> Any:
        body = req.json()
        a, b = body["roles"]
        return self.svc.endpoints.swap(str(a), str(b), bool(body.get("dry_run")))

    def ssh_key(self, req: Request) -> Any:
        return {"public_key": self.guests.links.public_key()}

    def routes(self) -> list[Route]:
        op = AuthKind.OPERATOR
        return [
            Route("POST", "/v1/deploy", self.deploy, op,
                  "Place a roles file's guests on the hosts and start a deploy job (dry_run: the plan only)",
                  DEPLOY_BODY),
            Route("GET", "/v1/guests", self.listing, op, "Guests (?host=H&role=R)"),
            Route("GET", "/v1/guests/{guest}", self.show, op, "One guest"),
            Route("POST", "/v1/guests/{guest}/reset", self.reset, op,
                  "Discard a guest's overlay: back to its pristine base, same identity and config"),
            Route("DELETE", "/v1/guests/{guest}", self.delete, op, "Remove a guest from its host"),
            Route("GET", "/v1/guests/{guest}/console", self.console, op,
                  "The tail of a guest's serial console log (?bytes=N, default 64 KiB)"),
            Route("GET", "/v1/hosts", self.hosts, op, "Hosts guests can run on: active nodes and registered hosts"),
            Route("POST", "/v1/hosts", self.add_host, op,
                  "Register a libvirt host the provisioner did not deploy (its SSH host key is checked)", HOST_BODY),
            Route("DELETE", "/v1/hosts/{host}", self.remove_host, op, "Forget a registered host that runs no guests"),
            Route("POST", "/v1/hosts/{host}/gc", self.gc, op,
                  "Remove base images no guest on the host uses from its pool"),
            Route("GET", "/v1/endpoints", self.endpoints, op,
                  "Role endpoints: VIP, port, DNS name, members and their health as the load balancer sees it"),
            Route("POST", "/v1/endpoints/swap", self.swap, op,
                  "Exchange two roles' endpoints at once (staging <-> production); dry_run: what would change",
                  SWAP_BODY),
            Route("GET", "/v1/ssh-key", self.ssh_key, op,
                  "The provisioner's SSH public key (for a registered host's authorized_keys)"),
        ]
