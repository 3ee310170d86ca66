"""The nightly runs' history: the nightly command records each night here, and reads
each machine's last nights back for its report; the dashboard shows them too."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInput
from ..nightly.history import Night, judge
from ..services import Services
from ..statuses import AuthKind
from .http import Request, Response, Route
from .views import page_limit

NIGHT_BODY = {"type": "object", "required": ["pool", "started_at", "ended_at", "machines"], "properties": {
    "pool": {"type": "string"}, "job": {"type": "integer", "nullable": True}, "started_at": {"type": "number"},
    "ended_at": {"type": "number"}, "machines": {"type": "array", "items": {"type": "object"}}}}


class NightRoutes:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def record(self, req: Request) -> Any:
        night = Night.parse(req.json())
        night_id = self.svc.store.record_night(
            night.pool, night.job, night.started_at, night.ended_at,
            [{"name": m.name, "rack": m.rack, "passed": m.passed, "reason": m.reason, "phases": list(m.phases)}
             for m in night.machines])
        return Response.of_json({"id": night_id}, status=201)

    def listing(self, req: Request) -> Any:
        return {"nights": self.svc.store.nights(page_limit(req, default=30, most=1000))}

    def machines(self, req: Request) -> Any:
        """Each machine's last nights (?nodes=a,b; default every machine) with what stands out."""
        raw = req.query.get("nodes")
        names = [n for n in raw.split(",") if n] if raw is not None else None
        if names is not None and len(names) > 10_000:
            raise InvalidInput("at most 10000 nodes at once")
        last = page_limit(req, default=7, most=100)
        history = self.svc.store.machine_nights(names, last)
        return {"machines": {name: {"nights": nights, "flags": judge(nights)} for name, nights in history.items()}}

    def routes(self) -> list[Route]:
        op = AuthKind.OPERATOR
        return [Route("POST", "/v1/nights", self.record, op, "Record a nightly run's results", NIGHT_BODY),
                Route("GET", "/v1/nights", self.listing, op, "The latest nightly runs (?limit=N)"),
                Route("GET", "/v1/nights/machines", self.machines, op,
                      "Each machine's last nights (?nodes=a,b&limit=N), with repeated failures and slower phases")]
