"""Reimage and rollback in the lab, on the shared mixed lab's four real nodes: two BIOS
machines behind IPMI BMCs in rack-1, two UEFI machines behind a Redfish BMC in rack-2, one
of them enforcing Secure Boot (its BMC switches it off for the maintenance image, on for
the disk: shim, GRUB and the kernel are verified). Each
network-boots the maintenance image, its agent lays the host image down with a
differencing layer (and on UEFI an EFI system partition, Debian's signed shim and GRUB,
and a firmware boot entry), the node boots from its own disk and its host agent reports.
Each check reads a part's own record: libvirt, virtualbmc's log, the node's events,
dnsmasq's log, our TFTP log, our HTTP byte counter, and the host itself over SSH
(including the UEFI firmware's variables).

The tests run in order on one lab (the state each leaves is the next one's start):
reimage all (the Secure Boot node is then powered off, done) -> the UEFI node boots with
the provisioner stopped -> rollback -> a new
version and back with --to-previous -> a Redfish BMC that stops answering mid-reimage
(the UEFI node is inspected again after it) -> a corrupted image -> power lost mid-write
(kill -9 of the daemon mid-reimage is in test_multicast, mid-session)."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import libvirt
import pytest
from selenium.webdriver.support.ui import WebDriverWait

from provisioner.boot.accesslog import dnsmasq_time, parse_time
from provisioner.lab import hypervisor

from .conftest import enroll_missing
from .dashboard import Dashboard
from .uefi import assert_booted_its_entry, assert_secure_boot_node, boot_entry, firmware_state
from .variants import patched

REPO = Path(__file__).resolve().parents[2]
HOST_IMAGE = REPO / "build/images/host/host.qcow2"
N1, N2 = "lab-r1-n1", "lab-r1-n2"  # BIOS + IPMI
NODES = (N1, N2)
UEFI = "lab-r2-n1"  # UEFI + Redfish
SECURE = "lab-r2-n2"  # UEFI + Redfish, Secure Boot on
ALL = (N1, N2, UEFI, SECURE)
PAIR = "tag:pair"  # N1 and the UEFI node: one batch, one job, worked on side by side
BOTH = ("--max-unavailable", "100%")  # both of a tag's nodes in one batch (the default is half)
VARIANT = "/etc/provisioner-variant"


@pytest.fixture
def all_lab(shared_lab):
    """The shared lab with its nodes enrolled (ready, or as the test before left them)."""
    enroll_missing(shared_lab, list(ALL))
    return shared_lab


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


@pytest.fixture
def dash(all_lab):
    with Dashboard(all_lab) as dashboard:
        yield dashboard


def test_reimage_all_upgrade_domain_by_upgrade_domain(all_lab, dash):
    lab = all_lab
    v1 = import_image(lab, HOST_IMAGE, "host")

    # At most two down at once (the default, half of three, would make three batches).
    code, out, err = lab.cli("reimage", "all", "--image", "host", "--max-unavailable", "2", "--dry-run")
    assert code == 0, out + err
    assert f"batch 1: {N1}, {UEFI}" in out and f"batch 2: {N2}, {SECURE}" in out, out
    assert all(node(lab, n)["state"] == "ready" for n in ALL), "a dry run changed something"

    # The dashboard, in a real browser on the provisioning network, watches N1's tile.
    dash.sign_in("/ui/racks")
    n1_id = node(lab, N1)["id"]
    assert dash.tile_state(n1_id) == "ready"
    dash.shot("racks-ready")
    metrics_before = dash.metrics()
    started = time.time()
    vbmc_before = (lab.lab.dir / "logs/vbmcd.log").read_text()
    watch = dash.watch_tile(n1_id)
    code, out, err = lab.cli("reimage", "all", "--image", "host", "--max-unavailable", "2")
    assert code == 0, out + err
    assert re.search(r"job \d+ done: 4 done", out), out
    seen = watch.stop(until="active")
    assert seen[0] == "ready" and "deploying" in seen and seen[-1] == "active", seen
    assert not watch.reloaded(), "the page was reloaded: the tiles must change in place"
    ids = [node(lab, n)["id"] for n in ALL]
    WebDriverWait(dash.driver, 20).until(
        lambda d: all(dash.tile_state(i) == "active" for i in ids) and "active 4" in dash.text("legend"),
        "every tile active")
    assert not watch.reloaded()
    dash.shot("racks-active")
    last = lab.client.get("/v1/jobs?limit=1")["jobs"][-1]["id"]
    members = {m["name"]: m for m in lab.client.get(f"/v1/jobs/{last}")["nodes"]}
    assert max(members[N1]["ended_at"], members[UEFI]["ended_at"]) <= \
        min(members[N2]["started_at"], members[SECURE]["started_at"]), \
        "the second upgrade domain started before the first came back"

    conn = lab.connect()
    vbmc = (lab.lab.dir / "logs/vbmcd.log").read_text()[len(vbmc_before):]
    try:
        for name in ALL:
            doc = node(lab, name)
            assert doc["state"] == "active" and doc["image_sha256"] == v1, doc["last_error"]
            assert doc["host"]["facts"]["base_sha256"] == v1
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
        for name in NODES:
            # IPMI set the disk as the boot device for good, and power-cycled the domain.
            assert re.search(rf'Set boot device called for {name} with boot device "hd"', vbmc), vbmc[-2000:]
            assert re.search(rf"Power off called for domain {name}", vbmc)
            assert "<boot dev='hd'/>" in conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    finally:
        conn.close()
    # The UEFI node: Redfish switched it, and its firmware booted the entry the deploy
    # made, first in BootOrder.
    switched = [e["message"] for e in lab.events(UEFI, started) if "boot from disk set" in (e["message"] or "")]
    assert switched[-1].endswith(f"via Redfish {lab.lab.redfish.url}"), switched
    assert_booted_its_entry(lab, UEFI, started)
    facts = {name: node(lab, name)["host"]["facts"] for name in ALL}
    assert (facts[N1]["secure_boot"], facts[UEFI]["secure_boot"]) == (None, False)  # BIOS; UEFI without it
    code, out, _ = lab.cli("nodes")
    assert all(re.search(rf"{n}\s.*\sactive\s.*host alive", out) for n in ALL), out
    assert_secure_boot_node(lab, SECURE, started)
    code, out, err = lab.cli("power", "off", SECURE)  # the modules after this one do not need it
    assert code == 0, out + err
    check_dashboard_and_metrics(lab, dash, metrics_before, started)


def check_dashboard_and_metrics(lab, dash: Dashboard, before: dict, started: float) -> None:
    """After the reimage: the node's page and console tail, the job page, the metrics
    against the database, then a job aborted from its page."""
    job = lab.client.get("/v1/jobs?limit=1")["jobs"][-1]
    dash.open(f"/ui/jobs/{job['id']}")
    assert dash.wait_text("the job's status", "job-status") == "done"
    dash.shot("job-done")
    dash.open(f"/ui/nodes/{N1}")
    assert dash.wait_text("the node's state", "node-state") == "active"
    dash.click("open-console")
    text = dash.wait_text("the console tail", "console")
    log = lab.lab.console_log(N1).read_text(errors="replace")
    assert "no console log" not in text and text.splitlines()[-1].strip()[:60] in log, text[-500:]
    dash.shot("node-console")

    # /metrics: the fleet's gauges are the database's counts; what the reimage added to
    # the counters is what the database recorded of it.
    after = dash.metrics()
    nodes = lab.client.get("/v1/nodes")["nodes"]
    for rack, state in {(n["rack"], n["state"]) for n in nodes}:
        want = sum(1 for n in nodes if (n["rack"], n["state"]) == (rack, state))
        assert after[("provisioner_nodes", (("rack", rack), ("state", state)))] == want, (rack, state)
    assert sum(v for (name, _), v in after.items() if name == "provisioner_nodes") == len(nodes)

    def grew(name: str, labels: tuple = ()) -> float:
        return after.get((name, labels), 0) - before.get((name, labels), 0)

    events = [e for n in ALL for e in lab.events(n, started)]
    moves = {}
    for e in events:
        if e["from_state"] and e["to_state"] and e["from_state"] != e["to_state"]:
            key = (("from_state", e["from_state"]), ("to_state", e["to_state"]))
            moves[key] = moves.get(key, 0) + 1
    assert moves == {k: grew("provisioner_node_transitions_total", k) for k in moves} and \
        sum(grew("provisioner_node_transitions_total", k) for (name, k) in after
            if name == "provisioner_node_transitions_total") == sum(moves.values()), moves
    write = (("state", "deploying"), ("step", "write-image"))
    assert grew("provisioner_step_duration_seconds_count", write) == len(ALL)
    sessions = job["stats"].get("multicast") or []
    members = lab.client.get(f"/v1/jobs/{job['id']}")["nodes"]
    http = sum(s["http_bytes"] for s in sessions) if sessions else sum(m["bytes"] or 0 for m in members)
    assert grew("provisioner_image_bytes_served_total", (("path", "unicast"),)) == http, (sessions, members)
    assert grew("provisioner_image_bytes_served_total", (("path", "multicast"),)) == \
        sum(s["sent_bytes"] for s in sessions), sessions
    jobs = lab.client.get("/v1/jobs?limit=1000")["jobs"]
    assert after[("provisioner_jobs", (("kind", "reimage"), ("status", "done")))] == \
        sum(1 for j in jobs if (j["kind"], j["status"]) == ("reimage", "done"))
    assert grew("provisioner_bmc_command_duration_seconds_count", (("command", "set_boot_device"), ("driver", "ipmi")))\
        >= 4, "two IPMI nodes: network boot, then disk"
    assert grew("provisioner_agent_heartbeats_total", (("agent", "host"),)) >= 1

    # Abort a job from its page: a rollback of rack-1 one node at a time, aborted while
    # its first batch runs; the second node is never touched.
    code, out, err = lab.cli("rollback", "rack-1", "--max-unavailable", "1", "--no-wait")
    assert code == 0, out + err
    job = lab.client.get("/v1/jobs?limit=1")["jobs"][-1]
    dash.open(f"/ui/jobs/{job['id']}")
    dash.click("abort")
    dash.driver.switch_to.alert.accept()  # the confirmation
    dash.wait_text("the abort's answer", "flash", lambda t: "abort requested" in t)
    dash.shot("job-abort")
    done = lab.wait_job(job["id"])
    assert done["status"] == "aborted" and sorted(m["status"] for m in done["nodes"]) == ["done", "skipped"], done
    dash.wait_text("the job aborted", "job-status", lambda t: t == "aborted")
    dash.shot("job-aborted")


def test_the_uefi_node_boots_its_host_from_disk_with_the_provisioner_stopped(all_lab):
    """The daemon (with its DHCP, TFTP and HTTP) is stopped and the node power-cycled
    behind its back: the disk boots the host through the firmware's entry."""
    lab = all_lab
    doc = node(lab, UEFI)
    entry = boot_entry(lab, UEFI, 0.0)
    lab.lab.stop_daemon()
    try:
        conn = lab.connect()
        try:
            dom = conn.lookupByName(UEFI)
            dom.destroy()
            dom.create()
        finally:
            conn.close()
        end = time.monotonic() + 240
        while True:  # until the host answers SSH, with the key the deploy recorded
            try:
                state = lab.ssh(UEFI, "cat /var/lib/provisioner/disk/state", doc=doc)
                break
            except AssertionError:
                assert time.monotonic() < end, lab.lab.console_log(UEFI).read_text(errors="replace")[-3000:]
                time.sleep(3)
        assert state.startswith(f"base={doc['image_sha256']}")
        assert firmware_state(lab, UEFI, doc)[0] == entry, "it booted the entry the deploy made"
    finally:
        lab.lab.restart_daemon()
    lab.wait(UEFI, lambda d: d["state"] == "active" and d["agent"] == "host alive", timeout=120)


def test_rollback_discards_the_layer_and_sends_nothing(all_lab):
    lab = all_lab
    v1 = sha_of(lab, "host")
    for name in (N1, UEFI):
        code, out, err = lab.cli("label", name, "--tag", "pair")
        assert code == 0, out + err
        lab.ssh(name, "echo written-after-deploy > /root/marker && sync")
        assert "marker" in lab.ssh(name, "ls /root")

    started, before = time.time(), lab.image_requests()
    code, out, err = lab.cli("rollback", PAIR, *BOTH)
    assert code == 0, out + err
    assert re.search(r"job \d+ done: 2 done", out), out
    assert lab.image_requests() == before, "a rollback must not ask for the image"
    for name in (N1, UEFI):
        assert node(lab, name)["state"] == "active"
        assert lab.job_bytes(name) == 0, "a rollback must not transfer image bytes"
        assert "marker" not in lab.ssh(name, "ls /root")
        assert lab.ssh(name, "sha256sum /var/lib/provisioner/disk/images/*").split()[0] == v1, "the base changed"
    assert_booted_its_entry(lab, UEFI, started)  # the entry is made again, and booted


def test_a_new_version_then_rollback_to_previous(all_lab, tmp_path):
    lab = all_lab
    v1 = sha_of(lab, "host")
    v2 = import_image(lab, patched(HOST_IMAGE, tmp_path / "host-v2.qcow2", {VARIANT: "v2\n"}), "host")
    assert sha_of(lab, "host") == v2 != v1  # the name now resolves to its newest version

    before = lab.image_bytes()
    code, out, err = lab.cli("reimage", PAIR, "--image", "host", *BOTH)
    assert code == 0, out + err
    size = lab.client.get("/v1/images/host")["size"]  # the name resolves to v2
    # Both in one batch: the new version went out once over multicast, HTTP carried what
    # the session missed (test_multicast looks at the session in detail).
    [session] = lab.client.get("/v1/jobs")["jobs"][-1]["stats"]["multicast"]
    assert session["payload_bytes"] == size and lab.image_bytes() - before == session["http_bytes"], session
    for name in (N1, UEFI):
        assert lab.job_bytes(name) == size, "the agent received less than the image"
        assert lab.ssh(name, f"cat {VARIANT}").strip() == "v2"
        assert node(lab, name)["previous_image_sha256"] == v1
        lab.ssh(name, "echo on-v2 > /root/marker && sync")

    started, before = time.time(), lab.image_requests()
    code, out, err = lab.cli("rollback", PAIR, "--to-previous", *BOTH)
    assert code == 0, out + err
    assert lab.image_requests() == before, "--to-previous must not transfer image bytes"
    for name in (N1, UEFI):
        doc = node(lab, name)
        assert lab.job_bytes(name) == 0
        assert doc["state"] == "active" and doc["image_sha256"] == v1 and doc["host"]["facts"]["base_sha256"] == v1
        assert "marker" not in lab.ssh(name, "ls /root")
        assert "no-variant" in lab.ssh(name, f"cat {VARIANT} 2>/dev/null || echo no-variant")
        sums = dict(reversed(line.split()) for line in
                    lab.ssh(name, "sha256sum /var/lib/provisioner/disk/images/*").splitlines())
        assert sums[f"/var/lib/provisioner/disk/images/{v1}.qcow2"] == v1, "the previous base changed"
    assert_booted_its_entry(lab, UEFI, started)


def test_a_bmc_that_stops_answering_mid_reimage_fails_that_node_while_the_other_finishes(all_lab):
    """The UEFI node and N2 in one batch (one upgrade domain, one tag), to the image both
    have on disk (N2's reimage to the same image sends nothing). The Redfish emulator is
    frozen (SIGSTOP: its port still takes connections, nothing answers) once the UEFI node
    has network-booted: it fails when it needs its BMC again, N2 finishes. The BMC back, `inspect` still
    network-boots the UEFI node (no stranded node), which leaves it ready for nightly."""
    lab = all_lab
    v1 = sha_of(lab, "host:1")
    for name, args in ((UEFI, ["--tag", "late", "--upgrade-domain", "1"]), (N2, ["--tag", "late"])):
        code, out, err = lab.cli("label", name, *args)
        assert code == 0, out + err
    before = lab.image_requests()
    code, out, err = lab.cli("reimage", "tag:late", "--image", "host:1", "--max-failures", "1", *BOTH, "--no-wait")
    assert code == 0, out + err
    job_id = int(re.search(r"job (\d+) started", out).group(1))
    assert "1 batches" in out, out
    doc = lab.wait(UEFI, lambda d: d["state"] == "deploying" and d["step"] in ("wait-agent", "write-image"),
                   timeout=120)
    frozen = lab.lab.redfish.pids()
    assert frozen
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        doc = lab.wait(UEFI, lambda d: d["state"] != "deploying", timeout=600)
        assert doc["state"] == "deploy-failed" and "boot-from-disk" in doc["last_error"], doc
        assert "did not answer" in doc["last_error"] or "timed out" in doc["last_error"], doc["last_error"]
        job = lab.wait_job(job_id)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    time.sleep(3)  # the requests the daemon gave up on are still in the emulator's queue: let them pass
    members = {m["name"]: m for m in job["nodes"]}
    assert members[N2]["status"] == "done" and members[UEFI]["status"] == "failed", job
    assert node(lab, N2)["state"] == "active" and node(lab, N2)["image_sha256"] == v1
    assert lab.image_requests() == before and lab.job_bytes(N2) == 0, "reimaging to the image on disk must not transfer it"
    assert "already on disk, layer reset" in " ".join(e["message"] or "" for e in lab.events(N2))
    code, out, err = lab.cli("inspect", UEFI)
    assert code == 0, out + err
    assert node(lab, UEFI)["state"] == "ready"
    code, out, err = lab.cli("label", UEFI, "--untag", "late", "--upgrade-domain", "auto")
    assert code == 0, out + err


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
    conn = lab.connect()
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
    conn = lab.connect()
    try:
        conn.lookupByName(N2).destroy()  # the plug, pulled in libvirt
    finally:
        conn.close()
    doc = lab.wait(N2, lambda d: d["state"] != "deploying", timeout=600)
    assert doc["state"] == "deploy-failed" and "write-image" in doc["last_error"], doc
    assert "timed out at its deadline" in doc["last_error"], "failed by the stall deadline, not by anything else"
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
