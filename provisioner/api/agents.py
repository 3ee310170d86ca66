"""Routes the agents call: the maintenance agent (lookup, inspection, heartbeat, command
results) and the host agent (heartbeat with host facts)."""

from __future__ import annotations

from typing import Any

from ..services import Services
from ..statuses import AuthKind
from .http import Request, Route

LOOKUP_BODY = {"type": "object", "required": ["mac"], "properties": {"mac": {"type": "string"},
                                                                      "boot": {"type": "string"}}}


class AgentRoutes:
    def __init__(self, svc: Services) -> None:
        self.agents = svc.agents

    def lookup(self, req: Request) -> Any:
        return self.agents.lookup(req.json(), req.client)

    def inspection(self, req: Request) -> Any:
        return self.agents.report_inspection(req.node, req.json())

    def heartbeat(self, req: Request) -> Any:
        return self.agents.heartbeat(req.node)

    def command_result(self, req: Request) -> Any:
        return self.agents.command_result(req.node, req.params["command"], req.json())

    def host_heartbeat(self, req: Request) -> Any:
        return self.agents.host_heartbeat(req.node, req.json())

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/v1/agent/lookup", self.lookup, AuthKind.NONE,
                  "Agent: find my node by MAC and receive this boot's token (once)", LOOKUP_BODY),
            Route("POST", "/v1/agent/inspection", self.inspection, AuthKind.AGENT,
                  "Agent: report inspection data", {"type": "object", "required": ["inventory"]}),
            Route("POST", "/v1/agent/heartbeat", self.heartbeat, AuthKind.AGENT,
                  "Agent: I am alive; returns pending commands"),
            Route("POST", "/v1/agent/commands/{command}", self.command_result, AuthKind.AGENT,
                  "Agent: report a command's status and result"),
            Route("POST", "/v1/host/heartbeat", self.host_heartbeat, AuthKind.HOST,
                  "Host agent: alive, with host facts", {"type": "object", "required": ["facts"]}),
        ]
