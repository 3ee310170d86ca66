"""The catalog: images stored once by sha256, read-only on disk, named and versioned
in the database. An upload is hashed as it arrives, inspected, and only then kept. A
controller that lacks an image the shared database names fetches it from another
controller by its sha256, and keeps it only if the bytes hash to that sha256."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ..errors import ImageInUse, ImageRefused, InvalidInput, NotFound
from ..models import validate_name
from ..secrets import Secret
from ..store import Store
from .formats import inspect_image

LOG = logging.getLogger(__name__)
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CHUNK = 1 << 20


@dataclass(frozen=True)
class Image:
    id: int
    name: str
    version: str
    sha256: str
    format: str
    virtual_size: int
    size: int

    @classmethod
    def of(cls, row: dict[str, Any]) -> "Image":
        return cls(id=row["id"], name=row["name"], version=row["version"], sha256=row["sha256"],
                   format=row["format"], virtual_size=row["virtual_size"], size=row["size"])

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


def parse_ref(text: str) -> tuple[str, str | None]:
    """NAME or NAME:VERSION."""
    name, sep, version = text.partition(":")
    validate_name(name, "image name")
    if sep and not _VERSION_RE.match(version):
        raise InvalidInput(f"invalid image version {version!r}: letters, digits, '.', '_', '-'")
    return name, (version if sep else None)


class Catalog:
    def __init__(self, root: Path, store: Store, peer_token: Secret | None = None,
                 peers: Callable[[], list[tuple[str, str]]] = list, fetch_timeout: float = 60.0) -> None:
        self.root = root
        self.store = store
        self.incoming = root / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)
        self.peer_token = peer_token or Secret("")
        self.peers = peers  # (name, base URL) of the other live controllers
        self.fetch_timeout = fetch_timeout
        self._fetching: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def local(self, sha256: str) -> Path:
        """The image's file here, fetched first from another controller if this one lacks
        it (one fetch at a time per image; whoever else asks waits for it)."""
        path = self.path(sha256)
        if path.is_file():
            return path
        rows = self.store.images_by_sha(sha256)
        if not rows:
            raise NotFound(f"no image {sha256}")
        with self._guard:
            lock = self._fetching.setdefault(sha256, threading.Lock())
        with lock:
            if not path.is_file():
                self._fetch(sha256, int(rows[-1]["size"]))
        return path

    def _fetch(self, sha256: str, size: int) -> None:
        failures = []
        for name, url in self.peers():
            try:
                self._fetch_from(name, url, sha256, size)
                return
            except (OSError, urllib.error.URLError, ImageRefused) as exc:
                LOG.error("image %s: fetching it from controller %s failed: %s", sha256[:16], name, exc)
                failures.append(f"{name}: {exc}")
        raise NotFound(f"image {sha256[:16]} is not on this controller, and no other controller gave it"
                       + (f" ({'; '.join(failures)})" if failures else " (none is alive)"))

    def _fetch_from(self, name: str, base: str, sha256: str, size: int) -> None:
        tmp = self.incoming / uuid.uuid4().hex
        digest = hashlib.sha256()
        received = 0
        request = urllib.request.Request(f"{base}/v1/peer/images/{sha256}",
                                         headers={"X-Controller-Token": self.peer_token.reveal()})
        try:
            with urllib.request.urlopen(request, timeout=self.fetch_timeout) as resp, tmp.open("wb") as out:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > size:
                        raise ImageRefused(f"controller {name} sent more than the image's {size} bytes: refused")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if received != size or digest.hexdigest() != sha256:
                raise ImageRefused(f"controller {name} sent {received} bytes hashing to {digest.hexdigest()[:16]}, "
                                   f"not image {sha256[:16]}: refused, nothing kept")
            os.chmod(tmp, 0o444)
            os.replace(tmp, self.path(sha256))
            LOG.info("image %s: fetched from controller %s, %d bytes, sha256 verified", sha256[:16], name, size)
        finally:
            tmp.unlink(missing_ok=True)

    def path(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise NotFound(f"no image with sha256 {sha256!r}")
        return self.root / sha256

    def resolve(self, ref: str) -> Image:
        name, version = parse_ref(ref)
        return Image.of(self.store.image(name, version))

    def image_by_sha(self, sha256: str) -> Image:
        rows = self.store.images_by_sha(sha256)
        if not rows:
            raise NotFound(f"no image with sha256 {sha256} in the catalog (was it removed?)")
        return Image.of(rows[-1])

    def import_stream(self, reader: BinaryIO, length: int, *, name: str, version: str | None,
                      fmt: str, source: str) -> tuple[Image, bool]:
        """Store an upload; (the image, whether its bytes were new to the catalog)."""
        validate_name(name, "image name")
        if version is not None and not _VERSION_RE.match(version):
            raise InvalidInput(f"invalid image version {version!r}: letters, digits, '.', '_', '-'")
        tmp = self.incoming / uuid.uuid4().hex
        digest = hashlib.sha256()
        received = 0
        try:
            with tmp.open("wb") as out:
                while received < length:
                    chunk = reader.read(min(CHUNK, length - received))
                    if not chunk:
                        break
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if received != length:
                raise ImageRefused(f"upload ended after {received} of {length} bytes: nothing was stored")
            info = inspect_image(tmp, fmt)
            sha = digest.hexdigest()
            final = self.path(sha)
            fresh = not final.exists()
            if fresh:
                os.chmod(tmp, 0o444)
                os.replace(tmp, final)
            row = self.store.add_image(name=name, version=version, sha256=sha, fmt=info.format,
                                       virtual_size=info.virtual_size, size=received, source=source)
        finally:
            tmp.unlink(missing_ok=True)
        image = Image.of(row)
        LOG.info("image %s: imported from %s, %s, %d bytes, sha256 %s%s", image.ref, source, image.format,
                 image.size, image.sha256, "" if fresh else " (content already stored)")
        return image, fresh

    def remove(self, ref: str) -> Image:
        image = self.resolve(ref)
        users = self.store.nodes_with_image(image.sha256)
        users += [f"job {j}" for j in self.store.running_job_ids()
                  if self.store.job_options(j).get("image_sha256") == image.sha256]
        users += [f"guest {g['name']}" for g in self.store.guests()
                  if image.sha256 in (g["base_sha256"], g["app_sha256"])]
        same_bytes = [r for r in self.store.images_by_sha(image.sha256) if r["id"] != image.id]
        if users and not same_bytes:
            raise ImageInUse(image=image.ref, users=", ".join(users))
        self.store.delete_image(image.id)
        if not same_bytes:
            self.path(image.sha256).unlink(missing_ok=True)
        LOG.info("image %s: removed", image.ref)
        return image
