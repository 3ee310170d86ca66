"""A libvirtd and virtlogd of the lab's own, started inside the lab namespace (so the
domains' taps land on the lab bridge) with a private view of libvirt's directories (so
several labs, and a libvirtd of the machine's, run side by side); the lab's domains defined
through libvirt-python."""

from __future__ import annotations

import logging
import shlex
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Sequence

import libvirt

from ..errors import LabError
from . import system

LOG = logging.getLogger(__name__)

_STATE_NAMES = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
                libvirt.VIR_DOMAIN_PAUSED: "paused", libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
                libvirt.VIR_DOMAIN_CRASHED: "crashed", libvirt.VIR_DOMAIN_BLOCKED: "blocked"}

# libvirt prints every error on stderr by default; ours are translated instead.
libvirt.registerErrorHandler(lambda ctx, err: None, None)

# What a system libvirtd keeps where, each given a directory of the lab's own.
_VIEW = (("run", "/run/libvirt"), ("lib", "/var/lib/libvirt"), ("log", "/var/log/libvirt"), ("etc", "/etc/libvirt"))


class LabLibvirt:
    """The lab's libvirtd. Inside the lab (its daemons, BMCs, sshd: whatever `inside()`
    starts), /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /etc/libvirt are the
    lab's own directories, bound over the system's in that process's mount namespace
    (`ip netns exec` gives each command one), so `qemu:///system` there is the lab's.
    From outside, `uri` reaches the same daemon through its socket's real path."""

    def __init__(self, netns: str, directory: Path) -> None:
        self.netns = netns
        self.dir = directory

    @property
    def socket(self) -> Path:
        return self.dir / "run/libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"

    def log_file(self, domain: str) -> Path:
        """libvirt's own log of a domain's qemu (its command line, its last words)."""
        return self.dir / "log/qemu" / f"{domain}.log"

    def inside(self, argv: Sequence[str]) -> list[str]:
        """`argv` run in the lab's namespace, seeing the lab's libvirt."""
        binds = " && ".join(f"mkdir -p {target} && mount --bind {shlex.quote(str(self.dir / sub))} {target}"
                            for sub, target in _VIEW)
        return ["ip", "netns", "exec", self.netns, "sh", "-c", f'{binds} && exec "$@"', "lab", *argv]

    def start(self) -> None:
        """virtlogd and libvirtd with the configuration the machine's packages installed
        (the files only: no domains, networks or pools of the machine's come along)."""
        for sub, _target in _VIEW:
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for conf in Path("/etc/libvirt").glob("*.conf"):
            shutil.copy2(conf, self.dir / "etc" / conf.name)
        shutil.chown(self.dir / "lib", "libvirt-qemu", "libvirt-qemu")
        for binary in ("virtlogd", "libvirtd"):
            system.run(self.inside([binary, "-d", "-p", f"/run/libvirt/{binary}.pid"]))
        system.wait_for(self.socket.exists, 30, "the lab's libvirtd socket")

    def connect(self) -> libvirt.virConnect:
        try:
            return libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise LabError(f"cannot connect to the lab's libvirtd ({self.uri}): {exc}") from exc


def create_disk(path: Path, size_gib: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    system.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{size_gib}G"])


def define(conn: libvirt.virConnect, xml: str) -> str:
    """Define a domain; its UUID (libvirt's, as a Redfish service names the system)."""
    try:
        return str(conn.defineXML(xml).UUIDString())
    except libvirt.libvirtError as exc:
        raise LabError(f"libvirt refused a lab domain: {exc}") from exc


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
