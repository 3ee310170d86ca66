"""The OpenAPI 3 document, built from the route table so it cannot drift from it."""

from __future__ import annotations

import re
from typing import Any, Iterable

from .. import __version__
from ..statuses import AuthKind


def openapi_document(routes: Iterable[Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if route.template == "/ui" or route.template.startswith("/ui/"):
            continue  # the dashboard's pages: HTML for a browser, not the API
        op: dict[str, Any] = {
            "summary": route.summary,
            "responses": {"200": {"description": "OK"}, "4XX": {"description": "Error",
                          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
        }
        params = re.findall(r"\{(\w+)\}", route.template)
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                for p in params]
        if route.auth == AuthKind.OPERATOR:
            op["security"] = [{"operatorToken": []}]
        elif route.auth == AuthKind.AGENT:
            op["security"] = [{"agentToken": []}]
        if route.body:
            op["requestBody"] = {"required": True,
                                 "content": {"application/json": {"schema": route.body}}}
        paths.setdefault(route.template, {})[route.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "provisioner", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "operatorToken": {"type": "http", "scheme": "bearer"},
                "agentToken": {"type": "apiKey", "in": "header", "name": "X-Agent-Token"},
            },
            "schemas": {"Error": {"type": "object", "properties": {"error": {
                "type": "object", "properties": {"type": {"type": "string"},
                                                 "message": {"type": "string"}}}}}},
        },
    }
