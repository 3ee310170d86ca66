"""Routes for guests (deploy a roles file, list, show, reset, delete, console) and the
hypervisor hosts they run on (list, register, remove, gc)."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInput
from ..models import ADDRESS_SCHEMA, NAME_SCHEMA, PORT_SCHEMA
from ..services import Services
from ..statuses import AuthKind
from .http import Request, Response, Route

DEPLOY_BODY = {"type": "object", "required": ["roles"],
               "properties": {"roles": {"type": "string"}, "templates": {"type": "object"},
                              "source": {"type": "string"}, "dry_run": {"type": "boolean"}}}
HOST_BODY = {"type": "object", "required": ["name", "address", "rack", "host_key"],
             "properties": {"name": NAME_SCHEMA, "address": ADDRESS_SCHEMA,
                            "port": PORT_SCHEMA, "rack": NAME_SCHEMA,
                            "host_key": {"type": "string", "description": "TYPE BASE64, as in a .pub file"}}}


def guest_routes(svc: Services) -> list[Route]:
    g = svc.guests

    def deploy(req: Request) -> Any:
        doc = g.deploy(req.json())
        return Response.of_json(doc, status=201 if doc.get("job") else 200)

    def listing(req: Request) -> Any:
        return {"guests": svc.store.guests(host=req.query.get("host") or None, role=req.query.get("role") or None)}

    def console(req: Request) -> Any:
        raw = req.query.get("bytes") or "65536"
        if not raw.isdigit() or not 0 < int(raw) <= 16 << 20:
            raise InvalidInput("bytes must be a number from 1 to 16777216")
        return {"guest": req.params["guest"], "text": g.console(req.params["guest"], int(raw)).decode(errors="replace")}

    return [
        Route("POST", "/v1/deploy", deploy, AuthKind.OPERATOR,
              "Place a roles file's guests on the hosts and start a deploy job (dry_run: the plan only)",
              DEPLOY_BODY),
        Route("GET", "/v1/guests", listing, AuthKind.OPERATOR, "Guests (?host=H&role=R)"),
        Route("GET", "/v1/guests/{guest}", lambda r: g.show(r.params["guest"]), AuthKind.OPERATOR, "One guest"),
        Route("POST", "/v1/guests/{guest}/reset", lambda r: g.reset(r.params["guest"]), AuthKind.OPERATOR,
              "Discard a guest's overlay: back to its pristine base, same identity and config"),
        Route("DELETE", "/v1/guests/{guest}", lambda r: g.delete(r.params["guest"]), AuthKind.OPERATOR,
              "Remove a guest from its host"),
        Route("GET", "/v1/guests/{guest}/console", console, AuthKind.OPERATOR,
              "The tail of a guest's serial console log (?bytes=N, default 64 KiB)"),
        Route("GET", "/v1/hosts", lambda r: {"hosts": g.host_list()}, AuthKind.OPERATOR,
              "Hosts guests can run on: active nodes and registered hosts"),
        Route("POST", "/v1/hosts", lambda r: Response.of_json(g.add_host(r.json()), status=201), AuthKind.OPERATOR,
              "Register a libvirt host the provisioner did not deploy (its SSH host key is checked)",
              HOST_BODY),
        Route("DELETE", "/v1/hosts/{host}", lambda r: g.remove_host(r.params["host"]), AuthKind.OPERATOR,
              "Forget a registered host that runs no guests"),
        Route("POST", "/v1/hosts/{host}/gc", lambda r: g.gc(r.params["host"]), AuthKind.OPERATOR,
              "Remove base images no guest on the host uses from its pool"),
        Route("GET", "/v1/ssh-key", lambda r: {"public_key": g.links.public_key()}, AuthKind.OPERATOR,
              "The provisioner's SSH public key (for a registered host's authorized_keys)"),
    ]
