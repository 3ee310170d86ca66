"""Routes for images (the catalog) and jobs (reimage, rollback, abort)."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInput, NotFound
from ..images.formats import declared_format
from ..services import Services
from ..statuses import AuthKind, JobKind
from .http import Request, Response, Route
from .views import job_view, page_limit

REIMAGE_BODY = {
    "type": "object", "required": ["target"],
    "properties": {"target": {"type": "string"}, "image": {"type": "string"},
                   "max_parallel": {"type": "string"}, "max_unavailable": {"type": "string"},
                   "max_failures": {"type": "string"}, "dry_run": {"type": "boolean"},
                   "multicast": {"type": "boolean"}, "force": {"type": "boolean"}},
}
ROLLBACK_BODY = {
    "type": "object", "required": ["target"],
    "properties": {"target": {"type": "string"}, "to_previous": {"type": "boolean"},
                   "max_parallel": {"type": "string"}, "max_unavailable": {"type": "string"},
                   "dry_run": {"type": "boolean"}, "force": {"type": "boolean"}},
}


def image_view(row: dict[str, Any], svc: Services) -> dict[str, Any]:
    doc = dict(row)
    doc["ref"] = f"{row['name']}:{row['version']}"
    doc["used_by"] = svc.store.nodes_with_image(row["sha256"])
    return doc


class FleetRoutes:
    """Images (the catalog) and reimage/rollback jobs."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def upload(self, req: Request) -> Any:
        if req.stream is None or req.length <= 0:
            raise InvalidInput("PUT the image bytes as the body, with a Content-Length")
        fmt = declared_format(req.query.get("filename", ""), req.query.get("format"))
        image, fresh = self.svc.catalog.import_stream(
            req.stream, req.length, name=req.query.get("name", ""), version=req.query.get("version") or None,
            fmt=fmt, source=req.query.get("source") or req.query.get("filename") or "upload")
        doc = image_view(self.svc.store.image(image.name, image.version), self.svc)
        doc["stored_new_bytes"] = fresh
        return Response.of_json(doc, status=201)

    def images(self, req: Request) -> Any:
        return {"images": [image_view(r, self.svc) for r in self.svc.store.images(req.query.get("name") or None)]}

    def image(self, req: Request) -> Any:
        image = self.svc.catalog.resolve(req.params["ref"])
        doc = image_view(self.svc.store.image(image.name, image.version), self.svc)
        doc["versions"] = [r["version"] for r in self.svc.store.images(image.name)]
        return doc

    def remove_image(self, req: Request) -> Any:
        image = self.svc.catalog.remove(req.params["ref"])
        return {"removed": image.ref, "sha256": image.sha256}

    def _job_request(self, req: Request, kind: JobKind) -> Any:
        body = req.json()
        target = str(body.get("target") or "")
        if not target:
            raise InvalidInput("target is required: a node, a rack or 'all'")
        plan = self.svc.jobs.plan(kind, target, body.get("image") or None, max_parallel=body.get("max_parallel"),
                                  max_unavailable=body.get("max_unavailable"),
                                  max_failures=body.get("max_failures"), to_previous=bool(body.get("to_previous")),
                                  multicast=body.get("multicast") is not False, force=bool(body.get("force")))
        doc = plan.doc()
        if body.get("dry_run"):
            doc["dry_run"] = True
            return doc
        job_id = self.svc.jobs.start(plan)
        return Response.of_json(self.svc.store.job(job_id), status=201)

    def reimage(self, req: Request) -> Any:
        return self._job_request(req, JobKind.REIMAGE)

    def rollback(self, req: Request) -> Any:
        return self._job_request(req, JobKind.ROLLBACK)

    def jobs(self, req: Request) -> Any:
        """The newest jobs, members counted by status (GET /v1/jobs/ID lists them); `next`
        is the cursor of the page of older ones."""
        limit = page_limit(req, default=100, most=1000)
        raw = req.query.get("before")
        if raw is not None and (not raw.isdigit() or len(raw) > 18):
            raise InvalidInput("before must be a job id")
        jobs = self.svc.store.job_summaries(limit + 1, int(raw) if raw is not None else None)
        more = len(jobs) > limit
        jobs = jobs[1:] if more else jobs
        return {"jobs": jobs, "next": jobs[0]["id"] if more else None}

    def job(self, req: Request) -> Any:
        try:
            job_id = int(req.params["job"])
        except ValueError as exc:
            raise NotFound(f"no job {req.params['job']!r}") from exc
        doc = job_view(self.svc.store, self.svc.store.job(job_id))
        doc["multicast_sessions"] = self.svc.multicast.live(job_id)  # open now: the live view
        return doc

    def controllers(self, req: Request) -> Any:
        """The fleet's controllers: racks held, jobs run, lease (alive when it holds)."""
        return {"controllers": self.svc.store.controllers(), "this": self.svc.controller.name}

    def abort(self, req: Request) -> Any:
        raw = req.json().get("job")
        return self.svc.jobs.abort(int(raw) if raw is not None else None)

    def routes(self) -> list[Route]:
        op = AuthKind.OPERATOR
        return [
            Route("PUT", "/v1/images", self.upload, op,
                  "Import an image: the body is the file; ?name=N[&version=V][&format=F][&filename=F]",
                  stream=True),
            Route("GET", "/v1/images", self.images, op, "The catalog (?name=N for one name's versions)"),
            Route("GET", "/v1/images/{ref}", self.image, op, "One image: NAME (newest) or NAME:VERSION"),
            Route("DELETE", "/v1/images/{ref}", self.remove_image, op, "Remove an image no node uses"),
            Route("POST", "/v1/reimage", self.reimage, op,
                  "Plan (dry_run) or start a reimage of a node, rack or all", REIMAGE_BODY),
            Route("POST", "/v1/rollback", self.rollback, op,
                  "Plan (dry_run) or start a rollback: discard the differencing layer", ROLLBACK_BODY),
            Route("GET", "/v1/jobs", self.jobs, op,
                  "The newest jobs, members counted (?limit=N&before=ID; 'next' pages to older ones)"),
            Route("GET", "/v1/jobs/{job}", self.job, op, "One job and its nodes"),
            Route("GET", "/v1/controllers", self.controllers, op,
                  "The controllers sharing this fleet's database: racks, jobs, leases"),
            Route("POST", "/v1/jobs/abort", self.abort, op,
                  "Stop a running job (the newest unless 'job' is given) before its next node starts"),
        ]
