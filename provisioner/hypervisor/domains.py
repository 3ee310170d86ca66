"""Guests on one host through libvirt: images into the pool once, an overlay and a
config drive per guest, the domain defined from the template and started, ready when
its guest agent answers. Reset discards the overlay; the identity and config stay."""

from __future__ import annotations

import io
import json
import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Self

import libvirt
import libvirt_qemu  # type: ignore[import-untyped]

from ..errors import HostError, NotFound
from ..guests.configdrive import make_iso
from ..guests.placement import Guest
from ..guests.render import NAMESPACE, domain_xml
from .pool import Pool, _err, base_name

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRef:
    """An image as the host needs it: which bytes, in what format, where to read them."""

    sha256: str
    format: str
    size: int
    virtual_size: int
    open: Callable[[], Any]  # a binary reader of the image's bytes


def _domain_type(conn: libvirt.virConnect) -> str:
    caps = ET.fromstring(conn.getCapabilities())
    return "kvm" if caps.find(".//guest/arch/domain[@type='kvm']") is not None else "qemu"


class HostConnection:
    """A host's libvirtd, for what a workflow asks of a host as a whole; its connection is
    closed when the `with` block ends, and libvirt's errors come out as HostError."""

    def __init__(self, conn: libvirt.virConnect, host: str) -> None:
        self.conn = conn
        self.host = host

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass  # the connection is gone either way

    def machine(self) -> tuple[int, int]:
        """(cores, memory in MiB), as the host's libvirtd describes the machine."""
        try:
            _, memory_mib, cpus = self.conn.getInfo()[:3]
        except libvirt.libvirtError as exc:
            raise _err(f"host {self.host}: libvirt did not describe the machine", exc) from exc
        return int(cpus), int(memory_mib)

    def running_guests(self) -> set[str]:
        try:
            return {g["name"] for g in list_guests(self.conn) if g["running"]}
        except libvirt.libvirtError as exc:
            raise _err(f"host {self.host}: libvirt did not list its domains", exc) from exc


class GuestHost(HostConnection):
    """A host's guests, in its storage pool. domain_type: 'kvm', 'qemu' (TCG), or 'auto'
    (kvm when the host's libvirt offers it). A host whose KVM cannot run a BIOS guest (the
    lab's, see LAB.md) must say 'qemu'. Used in a `with` block, which closes its connection."""

    def __init__(self, conn: libvirt.virConnect, pool: Pool, console_dir: Path, domain_type: str = "auto",
                 host: str = "host") -> None:
        super().__init__(conn, host)
        self.pool = pool
        self.console_dir = console_dir
        # A second directory pool, only so that libvirt makes the folder on the host.
        self.consoles = Pool(conn, console_dir, name=f"{pool.name}-consoles")
        self.domain_type = _domain_type(conn) if domain_type == "auto" else domain_type

    # -- images ---------------------------------------------------------------
    def ensure_image(self, image: ImageRef, complete: Callable[[str], bool] = lambda sha: True,
                     progress: Callable[[int], None] = lambda n: None) -> tuple[libvirt.virStorageVol, int]:
        """The image's volume, uploaded if this host lacks it; (volume, bytes sent).
        `complete(sha256)` says whether a volume already there is known whole: one left
        by an upload cut short (a daemon killed mid-transfer) is not, and is sent again."""
        name = base_name(image.sha256, image.format)
        vol = self.pool.volume(name)
        if vol is not None:
            if complete(image.sha256):
                return vol, 0
            LOG.info("host: image %s is on the host but not known whole: sending it again", image.sha256[:16])
            self.pool.delete(name)
        with image.open() as reader:
            vol, digest = self.pool.upload(name, reader, image.size, progress=progress)
        if digest != image.sha256:
            self.pool.delete(name)
            raise HostError(f"image {image.sha256[:16]} changed while it was sent (sha256 {digest[:16]}): "
                            "removed from the host")
        LOG.info("host: image %s uploaded (%d bytes)", image.sha256[:16], image.size)
        return vol, image.size

    # -- guests ---------------------------------------------------------------
    def create(self, guest: Guest, base: ImageRef, files: dict[str, str], app: ImageRef | None = None,
               complete: Callable[[str], bool] = lambda sha: True,
               uploaded: Callable[[str], None] = lambda sha: None, nic: tuple[str, str] | None = None) -> int:
        """Define and start the guest; the image bytes sent to the host (0 when it had them).
        nic: (MAC, bridge) of its NIC on the guest network; None: a user-mode NIC."""
        sent = 0
        vols = []
        for image in filter(None, (base, app)):
            vol, n = self.ensure_image(image, complete)
            if n:
                uploaded(image.sha256)
            sent += n
            vols.append(vol)
        base_vol, app_vol = vols[0], (vols[1] if app else None)
        overlay = self.pool.overlay(f"{guest.name}.qcow2", base_vol, base.format, base.virtual_size)
        iso = make_iso(files)
        self.pool.delete(f"{guest.name}-cidata.iso")
        drive, _ = self.pool.upload(f"{guest.name}-cidata.iso", io.BytesIO(iso), len(iso))
        xml = domain_xml(guest, domain_type=self.domain_type, overlay=overlay.path(), config_drive=drive.path(),
                         console_log=str(self.console_dir / f"{guest.name}.log"), base_sha256=base.sha256,
                         app=app_vol.path() if app_vol else None, app_format=app.format if app else "raw",
                         app_sha256=app.sha256 if app else None, mac=nic[0] if nic else None,
                         bridge=nic[1] if nic else None)
        try:
            dom = self.conn.defineXML(xml)
            dom.create()
        except libvirt.libvirtError as exc:
            raise HostError(f"guest {guest.name} did not start: {exc.get_error_message()}") from exc
        return sent

    def domain(self, name: str) -> libvirt.virDomain:
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            raise NotFound(f"no guest {name} on this host") from exc

    def agent(self, name: str, command: dict[str, Any], timeout: int = 5) -> Any:
        try:
            reply = libvirt_qemu.qemuAgentCommand(self.domain(name), json.dumps(command), timeout, 0)
        except libvirt.libvirtError as exc:
            raise HostError(f"guest {name}: its agent did not answer: {exc.get_error_message()}") from exc
        return json.loads(reply).get("return")

    def wait_ready(self, name: str, timeout: float = 300, sleep: Callable[[float], None] = time.sleep) -> float:
        """Seconds until the guest's agent answered guest-ping."""
        start = time.monotonic()
        while True:
            try:
                self.agent(name, {"execute": "guest-ping"}, timeout=2)
                return time.monotonic() - start
            except HostError:
                if time.monotonic() - start > timeout:
                    raise HostError(f"guest {name} was not ready after {timeout:.0f}s: see its console") from None
                sleep(1.0)

    def reset(self, name: str) -> None:
        """Back to its pristine base: discard the overlay, keep identity and config."""
        dom = self.domain(name)
        meta = self.metadata(dom)
        fmt = _backing_format(self.pool, name)
        base = self.pool.volume(base_name(meta.get("base", ""), fmt))
        overlay = self.pool.volume(f"{name}.qcow2")
        if base is None or overlay is None:
            raise HostError(f"guest {name}: its base or its overlay is gone from the host")
        virtual = overlay.info()[1]
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError as exc:
            raise HostError(f"cannot stop guest {name}: {exc.get_error_message()}") from exc
        self.pool.delete(f"{name}.qcow2")
        self.pool.overlay(f"{name}.qcow2", base, fmt, virtual)
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            raise HostError(f"guest {name} did not start after its reset: {exc.get_error_message()}") from exc

    def delete(self, name: str, keep_console: bool = False) -> bool:
        """Remove the guest's domain, overlay and config drive (and its console log unless
        keep_console), whichever exist; True if any did."""
        found = False
        try:
            dom = self.conn.lookupByName(name)
        except libvirt.libvirtError:
            dom = None
        if dom is not None:
            found = True
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError as exc:
                raise HostError(f"cannot remove guest {name}: {exc.get_error_message()}") from exc
        for volume in (f"{name}.qcow2", f"{name}-cidata.iso"):
            found = self.pool.delete(volume) or found
        if not keep_console:
            self.consoles.refresh()
            self.consoles.delete(f"{name}.log")
        return found

    def running(self, name: str) -> bool:
        try:
            return bool(self.conn.lookupByName(name).isActive())
        except libvirt.libvirtError:
            return False

    def gc(self, in_use: set[str]) -> list[str]:
        """Delete base images (volumes named base-<sha256>.<format>) that no guest on this
        host is backed by or attaches, and that are not in `in_use`; the names deleted."""
        used = set(in_use)
        for dom in self.conn.listAllDomains(0):
            meta = self.metadata(dom)
            used.update(filter(None, (meta.get("base"), meta.get("app"))))
        removed = []
        for volume in self.pool.volumes():
            if volume.startswith("base-") and volume[5:].split(".")[0] not in used:
                self.pool.delete(volume)
                removed.append(volume)
        return removed

    # -- what is there ----------------------------------------------------------
    @staticmethod
    def metadata(dom: libvirt.virDomain) -> dict[str, str]:
        try:
            raw = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
        except libvirt.libvirtError:
            return {}
        return dict(ET.fromstring(raw).attrib)

    def guests(self) -> list[dict[str, Any]]:
        return list_guests(self.conn)


def list_guests(conn: libvirt.virConnect) -> list[dict[str, Any]]:
    """The provisioner's guests on a host (their domains carry our metadata)."""
    out = []
    for dom in conn.listAllDomains(0):
        meta = GuestHost.metadata(dom)
        if meta:
            out.append({"name": dom.name(), "role": meta.get("role"), "index": int(meta.get("index", 0)),
                        "base": meta.get("base"), "running": bool(dom.isActive())})
    return sorted(out, key=lambda g: (g["role"] or "", g["index"]))


def _backing_format(pool: Pool, guest: str) -> str:
    vol = pool.volume(f"{guest}.qcow2")
    if vol is None:
        return "qcow2"
    fmt = ET.fromstring(vol.XMLDesc(0)).find("backingStore/format")
    return fmt.get("type", "qcow2") if fmt is not None else "qcow2"
