"""The lab through Vagrant: `provisioner lab up --vagrant`, then the top-level Vagrantfile
(vagrant-libvirt) makes two PXE-first nodes with no box on the lab's network, its trigger
adopts each (virtual BMC, inventory), and the provisioner enrolls both and reimages one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from provisioner.lab.lab import Lab

from .conftest import LabHandle, _close_shared

REPO = Path(__file__).resolve().parents[2]
HOST_IMAGE = REPO / "build/images/host/host.qcow2"


def vagrant(env: dict, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["vagrant", *argv], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def vagrant_lab():
    work = Path(tempfile.mkdtemp(prefix="provisioner-vagrant-"))
    env = {**os.environ, "VAGRANT_HOME": str(work / "home"), "VAGRANT_DOTFILE_PATH": str(work / "dot"),
           "VAGRANT_CHECKPOINT_DISABLE": "1", "VAGRANT_DEFAULT_PROVIDER": "libvirt",
           "PROVISIONER": f"{sys.executable} -m provisioner", "LAB_NODES": "2", "LAB_RACKS": "2",
           "LAB_NAME": "vagrant"}
    _close_shared()  # the misc group's lab is done with: its libvirtd need not run beside
    lab = Lab("vagrant")
    lab.down()
    try:
        lab.up(vagrant=True)
        up = vagrant(env, "up")
        assert "lab adopt lab-r1-n1" in up.stdout and "lab adopt lab-r2-n1" in up.stdout
        yield LabHandle(lab), env
    finally:
        vagrant(env, "destroy", "-f", check=False)
        lab.down()
        shutil.rmtree(work, ignore_errors=True)


def test_vagrant_up_gives_the_labs_nodes_on_a_network_without_libvirt_dhcp(vagrant_lab):
    lab, _env = vagrant_lab
    assert sorted(lab.inventory) == ["lab-r1-n1", "lab-r2-n1"]
    assert lab.inventory["lab-r1-n1"]["mac"] == f"{lab.lab.cfg.mac_prefix}:01:01"  # the lab's MACs, from its slot
    assert lab.inventory["lab-r2-n1"]["rack"] == "rack-2"
    # One BMC each, though Vagrant adopted them in parallel.
    assert len({n["bmc"]["address"] for n in lab.inventory.values()}) == 2
    conn = lab.connect()  # the lab's own libvirtd, which Vagrant was pointed at
    try:
        net = ET.fromstring(conn.networkLookupByName(lab.lab.cfg.netns).XMLDesc(0))
        assert net.find("ip/dhcp") is None and net.find("bridge").get("name") == lab.lab.cfg.bridge
        for name in lab.inventory:
            dom = conn.lookupByName(name)
            root = ET.fromstring(dom.XMLDesc(0))
            assert root.get("type") == "qemu"  # no nested KVM on this machine: emulation
            assert root.find("devices/interface/source").get("network") == lab.lab.cfg.netns
            assert root.find("devices/interface/boot").get("order") == "1"  # PXE first
            assert not dom.isActive()  # adopted: powered off until enrolled
    finally:
        conn.close()


def test_adopting_an_unknown_domain_is_one_line_and_changes_nothing(vagrant_lab):
    lab, _env = vagrant_lab
    before = lab.lab.inventory_file.read_text()
    code, out, err = lab.cli("lab", "adopt", "no-such-node", "--rack", "rack-1", "--name", "vagrant")
    assert code != 0
    assert err.strip().count("\n") == 0 and "no domain no-such-node to adopt" in err
    assert lab.lab.inventory_file.read_text() == before


def test_the_vagrant_nodes_enroll_and_one_reimages(vagrant_lab):
    lab, _env = vagrant_lab
    code, out, err = lab.cli("enroll", "--from", str(lab.lab.inventory_file))
    assert code == 0, out + err
    for name in lab.inventory:
        doc = lab.client.get(f"/v1/nodes/{name}")
        assert doc["state"] == "ready", doc["last_error"]
        inv = doc["inspection"]
        assert inv["memory"]["total_mib"] == 2048 and inv["cpu"]["count"] == 2
        assert next(d for d in inv["disks"] if d["name"] == "vda")["size_bytes"] == 20 * 2**30
        assert lab.inventory[name]["mac"] in [n["mac"] for n in inv["nics"]]
    code, out, err = lab.cli("image", "import", str(HOST_IMAGE), "--name", "host")
    assert code == 0, err
    code, out, err = lab.cli("reimage", "lab-r1-n1", "--image", "host")
    assert code == 0, out + err
    r1 = lab.client.get("/v1/nodes/lab-r1-n1")
    assert r1["state"] == "active", r1["last_error"]
    assert r1["image_sha256"] == lab.client.get("/v1/images/host")["sha256"]
    assert "lab-r1-n1" in lab.ssh("lab-r1-n1", "hostname")
    assert lab.client.get("/v1/nodes/lab-r2-n1")["state"] == "ready"  # the other is untouched
    # The serial console Vagrant set up is the lab's: the host's boot is in it.
    assert "provisioner-host: up after" in lab.lab.console_log("lab-r1-n1").read_text()
    # Vagrant adopts in parallel: the inventory lists both, in whichever order they came.
    assert sorted(n["name"] for n in yaml.safe_load(lab.lab.inventory_file.read_text())["nodes"]) == \
        ["lab-r1-n1", "lab-r2-n1"]
