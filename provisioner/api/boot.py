"""Routes iPXE and the maintenance agent fetch: per-node boot scripts, the maintenance
image's kernel and initramfs, and (for agents) base images."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import InvalidInput, NotFound
from ..services import Services
from ..statuses import AuthKind
from .http import Request, Response, Route

_ARTIFACT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HOST_RE = re.compile(r"^[A-Za-z0-9.:\[\]-]+$")


def artifact_paths(artifacts_dir: Path) -> list[Path]:
    return [artifacts_dir / "maintenance" / n for n in ("vmlinuz", "initrd.img")]


class BootRoutes:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def script(self, req: Request) -> Response:
        name = req.params["script"]
        if not name.endswith(".ipxe"):
            raise NotFound(f"no boot script {name!r}")
        host = req.headers.get("host", "")
        if not _HOST_RE.match(host):
            raise InvalidInput("boot script request without a usable Host header")
        return Response.text(self.svc.netboot.script(name[:-5], f"http://{host}"))

    def artifact(self, req: Request) -> Response:
        name = req.params["artifact"]
        if not _ARTIFACT_RE.match(name) or ".." in name:
            raise NotFound(f"no boot artifact {name!r}")
        root = (self.svc.settings.artifacts_dir / "maintenance").resolve()
        path = (root / name).resolve()
        if path.parent != root or not path.is_file():
            raise NotFound(f"no boot artifact {name!r}")
        self.svc.counters.add(f"http:maintenance/{name}")
        return Response(file=path, on_sent=lambda n: self.svc.counters.add("bytes:http", n))

    def image(self, req: Request) -> Response:
        path = self.svc.catalog.local(req.params["sha256"])  # fetched from another controller if need be
        self.svc.counters.add(f"http:image:{req.params['sha256'][:16]}")
        return Response(file=path, on_sent=lambda n: self.svc.counters.add("image_bytes_served", n))

    def peer_image(self, req: Request) -> Response:
        path = self.svc.catalog.path(req.params["sha256"])
        if not path.is_file():
            raise NotFound(f"controller {self.svc.controller.name} does not hold image {req.params['sha256']}")
        return Response(file=path)

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/boot/maintenance/{artifact}", self.artifact, AuthKind.NONE,
                  "Maintenance image kernel and initramfs"),
            Route("GET", "/boot/{script}", self.script, AuthKind.NONE,
                  "Per-node iPXE script by MAC (aa-bb-cc-dd-ee-ff.ipxe)"),
            Route("GET", "/v1/agent/images/{sha256}", self.image, AuthKind.AGENT,
                  "Agent: download a base image (Range requests resume)"),
            Route("GET", "/v1/peer/images/{sha256}", self.peer_image, AuthKind.PEER,
                  "Another controller: fetch an image this one holds (by sha256; it verifies it)"),
        ]
