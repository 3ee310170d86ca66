"""Who may call a route: the check the router runs before each handler."""

from __future__ import annotations

import hmac

from ..errors import Unauthorized
from ..services import Services
from ..statuses import AuthKind
from .http import Request


class Authorizer:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def __call__(self, req: Request, kind: AuthKind) -> None:
        if kind == AuthKind.NONE:
            return
        if kind == AuthKind.OPERATOR:
            self.operator(req)
        elif kind == AuthKind.PEER:
            token = req.headers.get("x-controller-token", "")
            if not token or not hmac.compare_digest(token, self.svc.catalog.peer_token.reveal()):
                raise Unauthorized("a controller call needs the fleet's controller token (from the shared secret file)")
        elif kind == AuthKind.HOST:
            req.node = self.svc.agents.authenticate_host(req.headers.get("x-agent-token"))
        else:
            req.node = self.svc.agents.authenticate(req.headers.get("x-agent-token"))

    def operator(self, req: Request) -> None:
        if req.local:
            return  # the unix socket's file mode is the operator's credential
        header = req.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not token or not hmac.compare_digest(token, self.svc.operator_token):
            raise Unauthorized("the operator API needs 'Authorization: Bearer <token>' "
                               f"(the token is in {self.svc.settings.operator_token_file} on the daemon's host)")
