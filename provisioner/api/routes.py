"""The route table, assembled from each resource's routes: nodes, images and jobs,
guests and hosts, agents, and the boot endpoints iPXE fetches. Routes validate and
delegate; the work lives in workflows/."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..services import Services
from ..statuses import AuthKind
from .agents import AgentRoutes
from .auth import Authorizer
from .boot import BootRoutes, artifact_paths
from .fleet import FleetRoutes
from .guests import GuestRoutes
from .http import Request, Response, Route, Router
from .nights import NightRoutes
from .nodes import NodeRoutes
from .openapi import openapi_document

__all__ = ["artifact_paths", "build_router"]


def build_router(svc: Services) -> Router:
    router = Router(Authorizer(svc))

    def health(req: Request) -> Any:
        return {"status": "ok", "version": __version__}

    def document(req: Request) -> Any:
        return openapi_document(router.routes)

    def metrics(req: Request) -> Response:
        body, content_type = svc.conductor.metrics.exposition()
        return Response(body=body, content_type=content_type)

    own = [Route("GET", "/v1/health", health, AuthKind.NONE, "Liveness of the daemon"),
           Route("GET", "/v1/openapi.json", document, AuthKind.NONE, "This document"),
           Route("GET", "/metrics", metrics, AuthKind.OPERATOR,
                 "Prometheus metrics: the fleet, jobs, steps, BMC commands, boot servers (docs/metrics.md)")]
    for route in own + NodeRoutes(svc).routes() + FleetRoutes(svc).routes() + GuestRoutes(svc).routes() \
            + NightRoutes(svc).routes() + AgentRoutes(svc).routes() + BootRoutes(svc).routes():
        router.add(route)
    return router
