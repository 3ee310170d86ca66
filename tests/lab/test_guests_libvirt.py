"""Guests through a real libvirtd (the lab's), reached as a remote host over
qemu+libssh with its host key checked: the base goes into a storage pool once,
read-only; each guest gets an overlay made by the storage API over the shared base,
a config drive and pinned cores; it boots and its guest agent answers; a reset brings
it back to pristine; delete leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import libvirt
import pytest

from provisioner.guests.placement import Host, place
from provisioner.guests.render import config_files
from provisioner.guests.roles import parse_roles
from provisioner.hypervisor.domains import GuestHost, ImageRef
from provisioner.hypervisor.pool import Pool, base_name
from provisioner.sshkeys import operator_key

from .conftest import LabSshd, agent_read, agent_write

REPO = Path(__file__).resolve().parents[2]
GUEST_IMAGE = REPO / "build/images/guest/guest.qcow2"
POOL = "provisioner-test"
ROLES = """
roles:
  - name: web
    base: guest
    vcpus: 1
    memory_mib: 192
    count: 2
    user_data: web.j2
    vars: {port: 8080}
"""


def image_ref(path: Path) -> ImageRef:
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                                     capture_output=True, text=True).stdout)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return ImageRef(sha, info["format"], path.stat().st_size, info["virtual-size"], lambda: path.open("rb"))


@pytest.fixture(scope="module")
def libvirt_host(shared_lab):
    lab = shared_lab.lab  # its namespace, bridge and libvirtd; its nodes are not used
    conn = lab.connect()
    try:
        pool = Pool(conn, lab.dir / "pool", name=POOL)
        # TCG: this machine's KVM cannot run a BIOS guest (LAB.md).
        yield GuestHost(conn, pool, lab.dir / "logs/guests", domain_type="qemu"), lab
    finally:
        for dom in conn.listAllDomains(0):
            if GuestHost.metadata(dom):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        try:
            pool = conn.storagePoolLookupByName(POOL)
            for vol in pool.listAllVolumes(0):
                vol.delete(0)
            if pool.isActive():
                pool.destroy()
            pool.undefine()
        except libvirt.libvirtError:
            pass
        conn.close()


def test_two_guests_share_one_read_only_base_boot_and_reset(libvirt_host, tmp_path):
    host, lab = libvirt_host
    (tmp_path / "web.j2").write_text("#cloud-config\n# {{ guest.name }} serves on {{ port }}\n")
    role = parse_roles(ROLES, tmp_path)[0]
    base = image_ref(GUEST_IMAGE)
    plan = place([role], [Host("lab", "rack-1", 2, 4096)], [], reserved_cores=0, reserved_memory_mib=256)
    assert [(g.name, g.cores) for g in plan.add] == [("web-1", (0,)), ("web-2", (1,))]

    sent = [host.ensure_image(base)[1] for _ in range(2)]
    assert sent == [base.size, 0], "the base goes to a host once"
    for guest in plan.add:
        host.create(guest, base, config_files(role, guest, "lab"))
    for guest in plan.add:
        host.wait_ready(guest.name, timeout=180)

    base_vol = host.pool.volume(base_name(base.sha256, "qcow2"))
    base_path = Path(base_vol.path())
    assert oct(base_path.stat().st_mode & 0o777) == "0o444"
    for guest in plan.add:
        overlay = host.pool.volume(f"{guest.name}.qcow2").path()
        chain = json.loads(subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", overlay],
                                          check=True, capture_output=True, text=True).stdout)
        assert [c["filename"] for c in chain] == [overlay, str(base_path)]
        dom = host.domain(guest.name)
        assert [list(p) for p in dom.vcpuPinInfo(0)] == [[i == guest.cores[0] for i in range(2)]]
        assert agent_read(host, guest.name, "/etc/hostname").strip() == guest.name
        assert f"{guest.name} serves on 8080" in agent_read(host, guest.name, "/var/lib/guest/user-data")
    assert [g["name"] for g in host.guests()] == ["web-1", "web-2"]

    agent_write(host, "web-1", "/root/marker", "written by the guest\n")
    assert agent_read(host, "web-1", "/root/marker") == "written by the guest\n"
    host.reset("web-1")
    host.wait_ready("web-1", timeout=180)
    assert agent_read(host, "web-1", "/root/marker") is None, "reset must discard the overlay"
    assert agent_read(host, "web-1", "/etc/hostname").strip() == "web-1", "reset keeps the guest's identity"
    assert hashlib.sha256(base_path.read_bytes()).hexdigest() == base.sha256, "the base changed"

    for guest in plan.add:
        host.delete(guest.name)
    assert host.guests() == []
    assert host.pool.volumes() == [base_name(base.sha256, "qcow2")]


def test_the_host_is_reached_over_ssh_with_its_recorded_key_only(libvirt_host):
    """The test machine's libvirtd as a remote host: sshd on the lab bridge's address,
    with a host key made as a deploy makes one, and the provisioner's operator key."""
    _, lab = libvirt_host
    key_file, operator_public = operator_key(lab.dir / "data")
    sshd = LabSshd(lab, operator_public)
    try:
        sshd.start()
        proc = subprocess.run(["ip", "netns", "exec", lab.cfg.netns, sys.executable,
                               str(REPO / "tests/lab/host_connect_check.py"), lab.cfg.address, sshd.public,
                               str(key_file), str(lab.dir / "known_hosts"), lab.cfg.unused_address],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
    finally:
        sshd.stop()
    assert result["recorded"]["ok"] and "lab-r1-n1" in result["recorded"]["domains"], result
    changed = result["changed"]
    assert not changed["ok"] and changed["error"] == "HostError", changed
    assert "host key is not the one recorded at deploy time" in changed["message"]
    unreachable = result["unreachable"]
    assert unreachable["error"] == "HostUnreachable" and "is unreachable" in unreachable["message"], unreachable
