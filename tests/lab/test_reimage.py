"""Reimage and rollback in the lab: a real node network-boots the maintenance image, its
agent lays the host image down with a differencing layer, the node boots from its own
disk, its host agent reports; rollback discards the layer with no image bytes sent."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOST_IMAGE = REPO / "build/images/host/host.qcow2"
NODE = "lab-r1-n1"


def image_bytes(lab) -> int:
    return int(lab.client.get("/v1/stats")["counters"].get("image_bytes_served", 0))


def ssh(lab, command: str) -> str:
    doc = lab.client.get(f"/v1/nodes/{NODE}")
    address = doc["host"]["facts"]["address"]
    proc = subprocess.run(["ip", "netns", "exec", lab.lab.cfg.netns, sys.executable, str(REPO / "tests/lab/ssh_run.py"),
                           address, str(lab.data / "ssh/id_ed25519"), doc["host"]["ssh_host_key"], command],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_reimage_then_rollback_discards_the_layer(host_lab):
    lab = host_lab
    code, out, err = lab.cli("image", "import", str(HOST_IMAGE), "--name", "host")
    assert code == 0, out + err
    sha = lab.client.get("/v1/images/host")["sha256"]

    code, out, err = lab.cli("reimage", NODE, "--image", "host")
    assert code == 0, out + err
    doc = lab.client.get(f"/v1/nodes/{NODE}")
    assert doc["state"] == "active" and doc["image_sha256"] == sha
    assert doc["host"]["facts"]["base_sha256"] == sha
    events = " ".join(e["message"] or "" for e in lab.client.get(f"/v1/nodes/{NODE}/events")["events"])
    assert "downloaded" in events and "boot from disk set and power cycled" in events
    code, out, _ = lab.cli("nodes")
    assert "active" in out and "host alive" in out

    # The host booted from its own disk: its root is the layer over the base, and the base is the catalog's bytes.
    assert f"base={sha}" in ssh(lab, "cat /var/lib/provisioner/disk/state")
    ssh(lab, "echo written-after-deploy > /root/marker && sync")
    assert "marker" in ssh(lab, "ls /root")

    before = image_bytes(lab)
    code, out, err = lab.cli("rollback", NODE)
    assert code == 0, out + err
    assert image_bytes(lab) == before, "a rollback must not transfer image bytes"
    assert "marker" not in ssh(lab, "ls /root")
    sums = ssh(lab, "sha256sum /var/lib/provisioner/disk/images/*")
    assert sums.split()[0] == sha, "the base changed on disk"

    # Reimaging to the image the disk already holds only resets the layer.
    code, out, err = lab.cli("reimage", NODE, "--image", "host")
    assert code == 0, out + err
    assert image_bytes(lab) == before
    assert lab.client.get(f"/v1/nodes/{NODE}")["state"] == "active"
