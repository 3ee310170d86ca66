"""Rows of the image catalog."""

from __future__ import annotations

import time
from typing import Any

from ..errors import Conflict, NotFound
from .base import SqlBase
from .engines import Connection

_COLUMNS = "id, name, version, sha256, format, virtual_size, size, source, created_at"


class ImageRows(SqlBase):
    def add_image(self, *, name: str, version: str | None, sha256: str, fmt: str, virtual_size: int,
                  size: int, source: str) -> dict[str, Any]:
        """Record an image; without a version it gets the next number for its name."""
        with self._tx() as db:
            if version is None:
                numbers = [int(r[0]) for r in db.execute("SELECT version FROM images WHERE name = ?",
                                                         (name,)) if str(r[0]).isdigit()]
                version = str(max(numbers, default=0) + 1)
            clash = db.execute("SELECT sha256 FROM images WHERE name = ? AND version = ?",
                               (name, version)).fetchone()
            if clash is not None:
                if clash[0] == sha256:
                    return self._image_where(db, "name = ? AND version = ?", (name, version))
                raise Conflict(f"image {name}:{version} already exists with other content; "
                               "images are immutable: import it under a new version")
            db.execute("INSERT INTO images (name, version, sha256, format, virtual_size, size, source, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (name, version, sha256, fmt, virtual_size, size, source, time.time()))
            return self._image_where(db, "name = ? AND version = ?", (name, version))

    @staticmethod
    def _image_where(db: Connection, where: str, args: tuple[Any, ...]) -> dict[str, Any]:
        row = db.execute(f"SELECT {_COLUMNS} FROM images WHERE {where}", args).fetchone()
        return dict(row)

    def images(self, name: str | None = None) -> list[dict[str, Any]]:
        if name:
            rows = self._query(f"SELECT {_COLUMNS} FROM images WHERE name = ? ORDER BY id", (name,))
        else:
            rows = self._query(f"SELECT {_COLUMNS} FROM images ORDER BY name, id")
        return [dict(r) for r in rows]

    def image(self, name: str, version: str | None = None) -> dict[str, Any]:
        """One image by name (its newest version) or name and version."""
        if version is None:
            rows = self._query(f"SELECT {_COLUMNS} FROM images WHERE name = ? ORDER BY id DESC LIMIT 1",
                               (name,))
        else:
            rows = self._query(f"SELECT {_COLUMNS} FROM images WHERE name = ? AND version = ?",
                               (name, version))
        if not rows:
            what = f"{name}:{version}" if version else name
            raise NotFound(f"no image {what!r} in the catalog: see 'provisioner image list'")
        return dict(rows[0])

    def images_by_sha(self, sha256: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query(f"SELECT {_COLUMNS} FROM images WHERE sha256 = ? ORDER BY id",
                                             (sha256,))]

    def delete_image(self, image_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM images WHERE id = ?", (image_id,))
