"""A host's guest storage: one libvirt directory pool. Bases arrive once per host, by
the libvirt stream API, are named by their sha256 and created read-only (mode 0444);
each guest's overlay is a qcow2 volume made by the storage API with the shared base as
its backing store, so two guests of one base share it and never copy it."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import BinaryIO, Callable
from xml.sax.saxutils import escape

import libvirt

from ..errors import HostError

LOG = logging.getLogger(__name__)
POOL = "provisioner"
CHUNK = 1 << 20


def _err(what: str, exc: libvirt.libvirtError) -> HostError:
    return HostError(f"{what}: {exc.get_error_message()}")


def base_name(sha256: str, fmt: str) -> str:
    return f"base-{sha256}.{fmt}"


class Pool:
    def __init__(self, conn: libvirt.virConnect, path: Path, name: str = POOL) -> None:
        self.conn = conn
        self.path = path
        self.name = name
        self.pool = self._ensure()

    def _ensure(self) -> libvirt.virStoragePool:
        try:
            pool = self.conn.storagePoolLookupByName(self.name)
        except libvirt.libvirtError:
            xml = (f"<pool type='dir'><name>{escape(self.name)}</name><target><path>{escape(str(self.path))}</path>"
                   "<permissions><mode>0755</mode></permissions></target></pool>")
            try:
                pool = self.conn.storagePoolDefineXML(xml, 0)
                pool.build(0)
                pool.setAutostart(1)
            except libvirt.libvirtError as exc:
                raise _err(f"cannot make storage pool {self.name} at {self.path}", exc) from exc
        try:
            if not pool.isActive():
                pool.build(0)  # (again) if its directory went away
                pool.create(0)
            pool.refresh(0)
        except libvirt.libvirtError as exc:
            raise _err(f"cannot start storage pool {self.name}", exc) from exc
        return pool

    def volume(self, name: str) -> libvirt.virStorageVol | None:
        try:
            return self.pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            return None

    def refresh(self) -> None:
        """Let libvirt see files that changed behind its back; skipped (not needed for our
        own volumes) while another upload to the pool is running."""
        try:
            self.pool.refresh(0)
        except libvirt.libvirtError as exc:
            LOG.debug("pool %s: refresh skipped: %s", self.name, exc.get_error_message())

    def volumes(self) -> list[str]:
        self.refresh()
        return sorted(self.pool.listVolumes())

    def upload(self, name: str, reader: BinaryIO, size: int, mode: str = "0444",
               progress: Callable[[int], None] = lambda n: None) -> tuple[libvirt.virStorageVol, str]:
        """A new volume with exactly the reader's bytes; (the volume, their sha256)."""
        xml = (f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{size}</capacity>"
               f"<target><format type='raw'/><permissions><mode>{mode}</mode></permissions></target></volume>")
        digest = hashlib.sha256()
        try:
            vol = self.pool.createXML(xml, 0)
        except libvirt.libvirtError as exc:
            raise _err(f"cannot create volume {name}", exc) from exc
        try:
            stream = self.conn.newStream(0)
            vol.upload(stream, 0, size, 0)
            sent = 0
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                stream.send(chunk)
                sent += len(chunk)
                progress(sent)
            stream.finish()
        except libvirt.libvirtError as exc:
            try:
                vol.delete(0)
            except libvirt.libvirtError:
                pass
            raise _err(f"upload of {name} failed", exc) from exc
        return self.pool.storageVolLookupByName(name), digest.hexdigest()

    def overlay(self, name: str, base: libvirt.virStorageVol, base_format: str,
                virtual_size: int) -> libvirt.virStorageVol:
        """A qcow2 volume backed by `base`: the guest's writes land here, never in the base."""
        xml = (f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{virtual_size}</capacity>"
               f"<target><format type='qcow2'/><permissions><mode>0600</mode></permissions></target>"
               f"<backingStore><path>{escape(base.path())}</path><format type='{base_format}'/></backingStore>"
               "</volume>")
        try:
            return self.pool.createXML(xml, 0)
        except libvirt.libvirtError as exc:
            raise _err(f"cannot create overlay {name} over {base.name()}", exc) from exc

    def delete(self, name: str) -> bool:
        vol = self.volume(name)
        if vol is None:
            return False
        try:
            vol.delete(0)
        except libvirt.libvirtError as exc:
            raise _err(f"cannot delete volume {name}", exc) from exc
        return True
