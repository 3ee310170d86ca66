"""Routes for images, jobs (reimage, rollback) and host agents."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInput, NotFound
from ..images.formats import declared_format
from ..services import Services
from ..statuses import AuthKind, JobKind
from .http import Request, Response, Route
from .views import job_view

REIMAGE_BODY = {
    "type": "object", "required": ["target"],
    "properties": {"target": {"type": "string"}, "image": {"type": "string"},
                   "max_parallel": {"type": "string"}, "max_unavailable": {"type": "string"},
                   "max_failures": {"type": "string"}, "dry_run": {"type": "boolean"}},
}
ROLLBACK_BODY = {
    "type": "object", "required": ["target"],
    "properties": {"target": {"type": "string"}, "to_previous": {"type": "boolean"},
                   "max_parallel": {"type": "string"}, "max_unavailable": {"type": "string"},
                   "dry_run": {"type": "boolean"}},
}


def image_view(row: dict[str, Any], svc: Services) -> dict[str, Any]:
    doc = dict(row)
    doc["ref"] = f"{row['name']}:{row['version']}"
    doc["used_by"] = svc.store.nodes_with_image(row["sha256"])
    return doc


def fleet_routes(svc: Services) -> list[Route]:
    def upload(req: Request) -> Any:
        name = req.query.get("name", "")
        if req.stream is None or req.length <= 0:
            raise InvalidInput("PUT the image bytes as the body, with a Content-Length")
        fmt = declared_format(req.query.get("filename", ""), req.query.get("format"))
        image, fresh = svc.catalog.import_stream(req.stream, req.length, name=name,
                                                 version=req.query.get("version") or None, fmt=fmt,
                                                 source=req.query.get("source") or req.query.get("filename") or "upload")
        doc = image_view(svc.store.image(image.name, image.version), svc)
        doc["stored_new_bytes"] = fresh
        return Response.of_json(doc, status=201)

    def list_images(req: Request) -> Any:
        return {"images": [image_view(r, svc) for r in svc.store.images(req.query.get("name") or None)]}

    def show_image(req: Request) -> Any:
        image = svc.catalog.resolve(req.params["ref"])
        doc = image_view(svc.store.image(image.name, image.version), svc)
        doc["versions"] = [r["version"] for r in svc.store.images(image.name)]
        return doc

    def remove_image(req: Request) -> Any:
        image = svc.catalog.remove(req.params["ref"])
        return {"removed": image.ref, "sha256": image.sha256}

    def agent_image(req: Request) -> Response:
        path = svc.catalog.path(req.params["sha256"])
        if not path.is_file():
            raise NotFound(f"no image {req.params['sha256']}")
        name = f"image:{req.params['sha256'][:16]}"
        svc.counters.add(f"http:{name}")
        return Response(file=path, on_sent=lambda n: svc.counters.add("image_bytes_served", n))

    def job_request(req: Request, kind: JobKind) -> Any:
        body = req.json()
        target = str(body.get("target") or "")
        if not target:
            raise InvalidInput("target is required: a node, a rack or 'all'")
        plan = svc.jobs.plan(kind, target, body.get("image") or None, max_parallel=body.get("max_parallel"),
                             max_unavailable=body.get("max_unavailable"), max_failures=body.get("max_failures"),
                             to_previous=bool(body.get("to_previous")))
        doc = plan.doc()
        if body.get("dry_run"):
            doc["dry_run"] = True
            return doc
        job_id = svc.jobs.start(plan)
        return Response.of_json(svc.store.job(job_id), status=201)

    def job_id(req: Request) -> int:
        try:
            return int(req.params["job"])
        except ValueError as exc:
            raise NotFound(f"no job {req.params['job']!r}") from exc

    def abort(req: Request) -> Any:
        raw = req.json().get("job")
        return svc.jobs.abort(int(raw) if raw is not None else None)

    return [
        Route("PUT", "/v1/images", upload, AuthKind.OPERATOR,
              "Import an image: the body is the file; ?name=N[&version=V][&format=F][&filename=F]",
              stream=True),
        Route("GET", "/v1/images", list_images, AuthKind.OPERATOR, "The catalog (?name=N for one name's versions)"),
        Route("GET", "/v1/images/{ref}", show_image, AuthKind.OPERATOR, "One image: NAME (newest) or NAME:VERSION"),
        Route("DELETE", "/v1/images/{ref}", remove_image, AuthKind.OPERATOR, "Remove an image no node uses"),
        Route("POST", "/v1/reimage", lambda r: job_request(r, JobKind.REIMAGE), AuthKind.OPERATOR,
              "Plan (dry_run) or start a reimage of a node, rack or all", REIMAGE_BODY),
        Route("POST", "/v1/rollback", lambda r: job_request(r, JobKind.ROLLBACK), AuthKind.OPERATOR,
              "Plan (dry_run) or start a rollback: discard the differencing layer", ROLLBACK_BODY),
        Route("GET", "/v1/jobs", lambda r: {"jobs": [job_view(svc.store, j) for j in svc.store.jobs()]}, AuthKind.OPERATOR, "Every job"),
        Route("GET", "/v1/jobs/{job}", lambda r: job_view(svc.store, svc.store.job(job_id(r))), AuthKind.OPERATOR,
              "One job and its nodes"),
        Route("POST", "/v1/jobs/abort", abort, AuthKind.OPERATOR,
              "Stop a running job (the newest unless 'job' is given) before its next node starts"),
        Route("GET", "/v1/agent/images/{sha256}", agent_image, AuthKind.AGENT,
              "Agent: download a base image (Range requests resume)"),
        Route("POST", "/v1/host/heartbeat", lambda r: svc.agents.host_heartbeat(r.node, r.json()), AuthKind.HOST,
              "Host agent: alive, with host facts", {"type": "object", "required": ["facts"]}),
    ]
