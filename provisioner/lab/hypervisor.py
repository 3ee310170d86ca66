"""libvirtd and virtlogd started inside the lab namespace (so the domains' taps land on
the lab bridge), and the lab's domains defined through libvirt-python."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt

from ..errors import LabError
from . import system

LOG = logging.getLogger(__name__)
URI = "qemu:///system"
SOCKET = Path("/run/libvirt/libvirt-sock")
PIDFILE = Path("/run/libvirtd.pid")

_STATE_NAMES = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
                libvirt.VIR_DOMAIN_PAUSED: "paused", libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
                libvirt.VIR_DOMAIN_CRASHED: "crashed", libvirt.VIR_DOMAIN_BLOCKED: "blocked"}

# libvirt prints every error on stderr by default; ours are translated instead.
libvirt.registerErrorHandler(lambda ctx, err: None, None)


def start_daemons(netns: str) -> None:
    """Start libvirtd and virtlogd in `netns`, unless ours already run there."""
    ours = set(system.netns_pids(netns))
    for binary, pidfile in (("virtlogd", Path("/run/virtlogd.pid")), ("libvirtd", PIDFILE)):
        pid = _pid(pidfile)
        if pid and system.pid_alive(pid):
            if pid in ours:
                continue
            raise LabError(f"{binary} (pid {pid}) already runs outside the lab namespace: "
                           f"stop it first (the lab's domains must be started from inside {netns})")
        system.run([binary, "-d"], netns=netns)
    system.wait_for(SOCKET.exists, 30, "libvirtd's socket")


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def connect() -> libvirt.virConnect:
    try:
        return libvirt.open(URI)
    except libvirt.libvirtError as exc:
        raise LabError(f"cannot connect to libvirtd ({URI}): {exc}") from exc


def create_disk(path: Path, size_gib: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    system.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{size_gib}G"])


def define(conn: libvirt.virConnect, xml: str) -> str:
    """Define a domain; its UUID (libvirt's, as a Redfish service names the system)."""
    try:
        return str(conn.defineXML(xml).UUIDString())
    except libvirt.libvirtError as exc:
        raise LabError(f"libvirt refused a lab domain: {exc}") from exc


def remove(conn: libvirt.virConnect, name: str) -> None:
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    try:
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
    except libvirt.libvirtError as exc:
        raise LabError(f"cannot remove lab domain {name}: {exc}") from exc
    Path(f"/var/log/libvirt/qemu/{name}.log").unlink(missing_ok=True)


def remove_guests(conn: libvirt.virConnect, under: Path) -> None:
    """Domains and storage pools on this machine's libvirtd with their files under `under`
    (the lab's directory): guests made when this machine is registered as a host, and nodes
    Vagrant made in the lab's pool, adopted or not."""
    for dom in conn.listAllDomains(0):
        if str(under) + "/" in dom.XMLDesc(0):
            remove(conn, dom.name())
    for pool in conn.listAllStoragePools(0):
        target = ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or ""
        if target == str(under) or target.startswith(str(under) + "/"):
            try:
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
            except libvirt.libvirtError as exc:
                raise LabError(f"cannot remove storage pool {pool.name()}: {exc}") from exc


def domain_facts(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    """What libvirt itself says of a domain: state, memory, vCPUs, MAC, disk size."""
    try:
        dom = conn.lookupByName(name)
        state, _reason = dom.state()
        info = dom.info()
        disk_bytes = None
        try:
            disk_bytes = dom.blockInfo("vda")[0]
        except libvirt.libvirtError:
            disk_bytes = None
        return {"state": _STATE_NAMES.get(state, str(state)), "memory_mib": info[1] // 1024,
                "vcpus": info[3], "disk_bytes": disk_bytes}
    except libvirt.libvirtError as exc:
        raise LabError(f"no lab domain {name}: {exc}") from exc


def offer_network(conn: libvirt.virConnect, name: str, bridge: str) -> None:
    """A libvirt network over the lab's bridge, for the Vagrantfile's private network: no
    DHCP, no NAT (the provisioner's dnsmasq answers on the bridge)."""
    xml = (f"<network><name>{name}</name><forward mode='bridge'/>"
           f"<bridge name='{bridge}'/></network>")
    try:
        net = conn.networkDefineXML(xml)
        net.create()
    except libvirt.libvirtError as exc:
        raise LabError(f"libvirt refused the lab network {name}: {exc}") from exc


def offer_pool(conn: libvirt.virConnect, name: str, path: Path) -> None:
    """A directory storage pool for the disks Vagrant gives its nodes."""
    xml = f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"
    try:
        pool = conn.storagePoolDefineXML(xml, 0)
        pool.create(0)
    except libvirt.libvirtError as exc:
        raise LabError(f"libvirt refused the lab storage pool {name}: {exc}") from exc


def withdraw_network(conn: libvirt.virConnect, name: str) -> None:
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        return
    try:
        if net.isActive():
            net.destroy()
        net.undefine()
    except libvirt.libvirtError as exc:
        raise LabError(f"cannot remove the lab network {name}: {exc}") from exc


def _network_first(root: ET.Element) -> bool:
    """Whether a domain boots from a NIC first: per-device boot orders when it has them
    (Vagrant writes those), else the first <os><boot dev=...>."""
    ordered = [(int(boot.get("order", "0")), dev.tag) for dev in root.iterfind("devices/*")
               for boot in dev.iterfind("boot") if boot.get("order")]
    if ordered:
        return min(ordered)[1] == "interface"
    first = root.find("os/boot")
    return first is not None and first.get("dev") == "network"


def adoptable(conn: libvirt.virConnect, name: str, bridge: str, network: str) -> dict[str, Any]:
    """Check a domain made outside the lab (by Vagrant) can be a lab node: it exists, boots
    from the network first, has a NIC on the lab's bridge or network. Power it off, as a new
    machine waits for enrollment. Returns its MAC, memory, vCPUs, disk size and firmware."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        raise LabError(f"no domain {name} to adopt: {exc}") from exc
    root = ET.fromstring(dom.XMLDesc(0))
    mac = None
    for nic in root.iterfind("devices/interface"):
        source = nic.find("source")
        mac_el = nic.find("mac")
        if source is not None and mac_el is not None and (source.get("bridge") == bridge
                                                          or source.get("network") == network):
            mac = mac_el.get("address")
            break
    if mac is None:
        raise LabError(f"domain {name} has no NIC on the lab network ({network}, bridge {bridge})")
    if not _network_first(root):
        raise LabError(f"domain {name} does not boot from the network first")
    try:
        if dom.isActive():
            dom.destroy()
        info = dom.info()
        disk_bytes = 0
        for disk in root.iterfind("devices/disk[@device='disk']"):
            target = disk.find("target")
            if target is not None:
                disk_bytes = dom.blockInfo(target.get("dev"))[0]
                break
    except libvirt.libvirtError as exc:
        raise LabError(f"cannot adopt domain {name}: {exc}") from exc
    os_el = root.find("os")
    firmware = os_el.get("firmware") if os_el is not None else None
    return {"mac": mac, "memory_mib": info[1] // 1024, "vcpus": info[3], "disk_gib": disk_bytes // 2**30,
            "uefi": firmware == "efi"}
