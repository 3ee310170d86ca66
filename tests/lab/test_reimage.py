"""Reimage and rollback in the lab, on a rack of two real nodes: each network-boots the
maintenance image, its agent lays the host image down with a differencing layer, the
node boots from its own disk and its host agent reports. Each check reads a part's own
record: libvirt, virtualbmc's log, dnsmasq's log, our TFTP log, our HTTP byte counter,
and the host itself over SSH.

The tests run in order on one lab (the state each leaves is the next one's start):
reimage the rack -> rollback and reimage-to-same -> a new version and back with
--to-previous -> a corrupted image -> power lost mid-write -> kill -9 of the daemon."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import libvirt

from provisioner.boot.accesslog import dnsmasq_time, parse_time
from provisioner.lab import hypervisor

from .variants import patched

REPO = Path(__file__).resolve().parents[2]
HOST_IMAGE = REPO / "build/images/host/host.qcow2"
N1, N2 = "lab-r1-n1", "lab-r1-n2"
NODES = (N1, N2)
VARIANT = "/etc/provisioner-variant"


def sha_of(lab, ref: str) -> str:
    return lab.client.get(f"/v1/images/{ref}")["sha256"]


def node(lab, name: str) -> dict:
    return lab.client.get(f"/v1/nodes/{name}")


def event_time(lab, name: str, words: str, since: float) -> float:
    times = [e["ts"] for e in lab.events(name, since) if words in (e["message"] or "")]
    assert times, f"{name}: no event with {words!r} since the start"
    return times[-1]


def dhcp_requests(lab, mac: str) -> list[tuple[float, str]]:
    """DHCP requests dnsmasq logged from this MAC, with their times (the log has no year
    and whole seconds). Router solicitations (the kernel's IPv6 autoconfiguration) are
    not DHCP and not counted."""
    return [(dnsmasq_time(line), line) for line in lab.log("dnsmasq.log").splitlines()
            if mac in line and re.search(r" DHCP[A-Z]+\(", line)]


def tftp_times(lab, ip: str) -> list[float]:
    return [parse_time(line.split()[0]) for line in lab.log("tftp.log").splitlines()
            if line.split()[1:2] == [ip]]


def import_image(lab, path: Path, name: str) -> str:
    code, out, err = lab.cli("image", "import", str(path), "--name", name)
    assert code == 0, out + err
    return sha_of(lab, name)


def test_reimage_a_rack_upgrade_domain_by_upgrade_domain(rack_lab):
    lab = rack_lab
    v1 = import_image(lab, HOST_IMAGE, "host")

    code, out, err = lab.cli("reimage", "rack-1", "--image", "host", "--dry-run")
    assert code == 0, out + err
    assert f"batch 1: {N1}" in out and f"batch 2: {N2}" in out
    assert all(node(lab, n)["state"] == "ready" for n in NODES), "a dry run changed something"

    started = time.time()
    vbmc_before = (lab.lab.dir / "logs/vbmcd.log").read_text()
    code, out, err = lab.cli("reimage", "rack-1", "--image", "host")
    assert code == 0, out + err
    assert re.search(r"job \d+ done: 2 done", out), out
    job = lab.client.get("/v1/jobs")["jobs"][-1]
    first, second = job["nodes"]
    assert (first["name"], second["name"]) == NODES
    assert first["ended_at"] <= second["started_at"], "the second upgrade domain started before the first came back"

    conn = hypervisor.connect()
    vbmc = (lab.lab.dir / "logs/vbmcd.log").read_text()[len(vbmc_before):]
    try:
        for name in NODES:
            doc = node(lab, name)
            assert doc["state"] == "active" and doc["image_sha256"] == v1, doc["last_error"]
            assert doc["host"]["facts"]["base_sha256"] == v1
            # IPMI set the disk as the boot device for good, and power-cycled the domain.
            assert re.search(rf'Set boot device called for {name} with boot device "hd"', vbmc), vbmc[-2000:]
            assert re.search(rf"Power off called for domain {name}", vbmc)
            domain = conn.lookupByName(name)
            assert "<boot dev='hd'/>" in domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            assert hypervisor.domain_facts(conn, name)["state"] == "running"
            # After the switch the host asked our DHCP and TFTP servers for nothing: it booted
            # from its own disk, with the address it was given at deploy time.
            switch = event_time(lab, name, "boot from disk set and power cycled", started)
            mac, ip = lab.inventory[name]["mac"], doc["host"]["facts"]["address"]
            assert [t for t, _ in dhcp_requests(lab, mac) if t >= started], "the maintenance boot used DHCP"
            late = [line for t, line in dhcp_requests(lab, mac) if t > switch + 1]
            assert not late, f"DHCP from the host after the switch: {late}"
            assert not [t for t in tftp_times(lab, ip) if t > switch], "TFTP from the host after the switch"
            assert f"base={v1}" in lab.ssh(name, "cat /var/lib/provisioner/disk/state")
    finally:
        conn.close()
    code, out, _ = lab.cli("nodes")
    assert all(re.search(rf"{n}\s.*\sactive\s.*host alive", out) for n in NODES), out


def test_rollback_discards_the_layer_and_reimage_to_same_sends_nothing(rack_lab):
    lab = rack_lab
    v1 = sha_of(lab, "host")
    lab.ssh(N1, "echo written-after-deploy > /root/marker && sync")
    assert "marker" in lab.ssh(N1, "ls /root")

    before = lab.image_requests()
    code, out, err = lab.cli("rollback", N1)
    assert code == 0, out + err
    assert lab.image_requests() == before, "a rollback must not ask for the image"
    assert lab.job_bytes(N1) == 0, "a rollback must not transfer image bytes"
    assert "marker" not in lab.ssh(N1, "ls /root")
    assert lab.ssh(N1, "sha256sum /var/lib/provisioner/disk/images/*").split()[0] == v1, "the base changed"

    code, out, err = lab.cli("reimage", N2, "--image", "host")
    assert code == 0, out + err
    assert lab.image_requests() == before and lab.job_bytes(N2) == 0, "reimaging to the image on disk must not transfer it"
    assert node(lab, N2)["state"] == "active"
    assert "already on disk, layer reset" in " ".join(e["message"] or "" for e in lab.events(N2))


def test_a_new_version_then_rollback_to_previous(rack_lab, tmp_path):
    lab = rack_lab
    v1 = sha_of(lab, "host")
    v2 = import_image(lab, patched(HOST_IMAGE, tmp_path / "host-v2.qcow2", {VARIANT: "v2\n"}), "host")
    assert sha_of(lab, "host") == v2 != v1  # the name now resolves to its newest version

    before, requests = lab.image_bytes(), lab.image_requests()
    code, out, err = lab.cli("reimage", N1, "--image", "host")
    assert code == 0, out + err
    size = lab.client.get("/v1/images/host")["size"]  # the name resolves to v2
    assert lab.image_requests() > requests, "a new version is downloaded"
    assert lab.job_bytes(N1) == size and lab.image_bytes() - before >= size, "the agent and the server disagree"
    assert lab.ssh(N1, f"cat {VARIANT}").strip() == "v2"
    assert node(lab, N1)["previous_image_sha256"] == v1
    lab.ssh(N1, "echo on-v2 > /root/marker && sync")

    before = lab.image_requests()
    code, out, err = lab.cli("rollback", N1, "--to-previous")
    assert code == 0, out + err
    assert lab.image_requests() == before and lab.job_bytes(N1) == 0, "--to-previous must not transfer image bytes"
    doc = node(lab, N1)
    assert doc["image_sha256"] == v1 and doc["host"]["facts"]["base_sha256"] == v1
    assert "marker" not in lab.ssh(N1, "ls /root")
    assert "no-variant" in lab.ssh(N1, f"cat {VARIANT} 2>/dev/null || echo no-variant")
    sums = dict(reversed(line.split()) for line in
                lab.ssh(N1, "sha256sum /var/lib/provisioner/disk/images/*").splitlines())
    assert sums[f"/var/lib/provisioner/disk/images/{v1}.qcow2"] == v1, "the previous base changed"


def test_a_corrupted_image_fails_on_its_checksum_and_never_boots(rack_lab, tmp_path):
    lab = rack_lab
    bad = import_image(lab, patched(HOST_IMAGE, tmp_path / "bad.qcow2", {VARIANT: "bad\n"}), "bad")
    stored = lab.data / "images" / bad
    os.chmod(stored, 0o644)
    with stored.open("r+b") as fh:  # flip bits in the store, after import checked the file
        fh.seek(4 << 20)
        byte = fh.read(1)
        fh.seek(4 << 20)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.chmod(stored, 0o444)

    started = time.time()
    code, out, err = lab.cli("reimage", N2, "--image", "bad")
    assert code == 1, out + err
    doc = node(lab, N2)
    assert doc["state"] == "deploy-failed" and "checksum mismatch" in doc["last_error"], doc
    assert doc["image_sha256"] == sha_of(lab, "host:1"), "a failed deploy must not record the image"
    events = " ".join(e["message"] or "" for e in lab.events(N2, started))
    assert "boot from disk set" not in events
    conn = hypervisor.connect()
    try:
        assert hypervisor.domain_facts(conn, N2)["state"] == "shut off", "a failed node is left powered off"
    finally:
        conn.close()
    code, out, _ = lab.cli("nodes")
    assert re.search(rf"{N2}\s.*\sdeploy-failed\s", out)


def test_power_lost_mid_write_fails_at_the_deadline_then_a_second_reimage_succeeds(rack_lab, tmp_path):
    lab = rack_lab
    # A raw image (1 GiB on the wire) keeps the agent writing long enough to pull the plug.
    raw = import_image(lab, patched(HOST_IMAGE, tmp_path / "host.raw", {VARIANT: "raw\n"}, fmt="raw"), "host-raw")
    code, out, err = lab.cli("reimage", N2, "--image", "host-raw", "--no-wait")
    assert code == 0, out + err
    job_id = int(re.search(r"job (\d+) started", out).group(1))
    lab.wait(N2, lambda d: (d.get("progress") or {}).get("phase") == "writing"
             and d["progress"]["total"] // 4 < d["progress"]["bytes"] < d["progress"]["total"] * 3 // 4, timeout=300)
    conn = hypervisor.connect()
    try:
        conn.lookupByName(N2).destroy()  # the plug, pulled in libvirt
    finally:
        conn.close()
    pulled = time.time()
    doc = lab.wait(N2, lambda d: d["state"] != "deploying", timeout=300)
    assert doc["state"] == "deploy-failed" and "write-image" in doc["last_error"], doc
    assert time.time() - pulled >= 30, "failed before its stall deadline"
    assert lab.wait_job(job_id)["status"] == "failed"

    code, out, err = lab.cli("reimage", N2, "--image", "host-raw")
    assert code == 0, out + err
    doc = node(lab, N2)
    assert doc["state"] == "active" and doc["image_sha256"] == raw
    assert lab.ssh(N2, f"cat {VARIANT}").strip() == "raw"
    # The download resumed from what the agent had synced to disk before the power cut.
    # (The agent's own count: the server's may still grow by the cut connection's last bytes
    # until its write times out.)
    assert 0 < lab.job_bytes(N2) < lab.client.get("/v1/images/host-raw")["size"]


def test_kill9_the_daemon_mid_reimage_then_every_node_ends(rack_lab):
    lab = rack_lab
    started = time.time()
    code, out, err = lab.cli("reimage", "rack-1", "--image", "host:2", "--no-wait")
    assert code == 0, out + err
    job_id = int(re.search(r"job (\d+) started", out).group(1))
    lab.wait(N1, lambda d: d["step"] == "write-image", timeout=300)
    os.kill(lab.lab.load().daemon_pid, signal.SIGKILL)
    time.sleep(2)
    lab.lab.restart_daemon()

    job = lab.wait_job(job_id)
    assert job["status"] == "done", job
    for name in NODES:
        doc = node(lab, name)
        assert doc["state"] == "active", doc["last_error"]
        assert doc["image_sha256"] == sha_of(lab, "host:2")
        laid = [e for e in lab.events(name, started) if "image laid down" in (e["message"] or "")]
        assert len(laid) == 1, f"{name} was written {len(laid)} times"
    assert any(e["event"] == "resume" for e in lab.events(N1, started))
    code, out, _ = lab.cli("nodes")
    assert all(re.search(rf"{n}\s.*\sactive\s", out) for n in NODES), out
