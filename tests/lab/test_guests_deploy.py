"""Guests per role end to end, with real parts only: a lab node enrolled and reimaged to
the host image (its libvirtd runs guests nested, TCG inside TCG; in the tier, the shared
lab's lab-r1-n1 as the nightly run left it), and this machine's own
libvirtd registered as a second host, reached as a remote one (qemu+libssh to an sshd on
the lab bridge, with a host key the operator gives). `provisioner deploy` places two
roles across both racks; the tests then check what the hosts themselves say."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from provisioner.hypervisor.domains import GuestHost
from provisioner.hypervisor.pool import Pool
from provisioner.lab import hypervisor
from provisioner.sshkeys import new_keypair

from .conftest import LabSshd, agent_read, agent_write, enroll_missing, import_missing

REPO = Path(__file__).resolve().parents[2]
NODE = "lab-r1-n1"
ROLES = """
roles:
  - name: web
    base: guest
    app: app
    vcpus: 1
    memory_mib: 160
    count: {web}
    upgrade_domains: 2
    user_data: web.j2
    vars: {{port: 8080}}
  - name: worker
    base: guest-b
    vcpus: 1
    memory_mib: 160
    count: 1
    user_data: worker.j2
    vars: {{queue: {queue}}}
"""


class GuestLab:
    def __init__(self, handle, tmp: Path) -> None:
        self.h = handle
        self.tmp = tmp
        self.roles = tmp / "roles.yaml"
        (tmp / "worker.j2").write_text("#cloud-config\n# takes work from {{ queue }}\n")
        (tmp / "web.j2").write_text("#cloud-config\n# {{ guest.name }} on {{ guest.host }} serves on {{ port }}\n")
        self.write(web=3)

    def write(self, web: int, queue: str = "jobs") -> None:
        self.roles.write_text(ROLES.format(web=web, queue=queue))

    def cli(self, *argv: str) -> tuple[int, str, str]:
        return self.h.cli(*argv)

    def guests(self) -> dict[str, dict]:
        return {g["name"]: g for g in json.loads(self.cli("--json", "guests")[1])}

    def jobs(self) -> list[dict]:
        return json.loads(self.cli("--json", "job")[1])

    def local(self) -> GuestHost:
        """This machine's libvirtd, directly (to look inside its guests with their agents)."""
        conn = hypervisor.connect()
        return GuestHost(conn, Pool(conn, self.h.lab.guest_pool), self.h.lab.dir / "guest-consoles", "qemu")

    def on_node(self, command: str) -> str:
        return self.h.ssh(NODE, command)


def only_node_host(handle) -> None:
    """NODE active on a host image, and no other node a host: enrolled and reimaged if this
    module runs alone; in the tier, every other node that ever ran as a host (its rack-mate,
    active since the nightly run; the UEFI nodes reimage deployed) is powered off and
    forgotten."""
    enroll_missing(handle, [NODE])
    import_missing(handle, REPO / "build/images/host/host.qcow2", "host")
    if handle.client.get(f"/v1/nodes/{NODE}")["state"] != "active":
        started = time.monotonic()
        code, out, err = handle.cli("reimage", NODE, "--image", "host")
        assert code == 0, out + err
        print(f"[timing] reimage to the host image: {time.monotonic() - started:.0f}s")
    for node in handle.client.get("/v1/nodes")["nodes"]:
        if node["name"] != NODE and node["host"]["ssh_host_key"]:
            assert handle.cli("power", "off", node["name"])[0] == 0
            code, out, err = handle.cli("delete", node["name"])
            assert code == 0, out + err


@pytest.fixture(scope="module")
def guest_lab(shared_lab, tmp_path_factory):
    handle = shared_lab
    tmp = tmp_path_factory.mktemp("guests")
    only_node_host(handle)
    guest = REPO / "build/images/guest/guest.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(guest), str(tmp / "guest-b.raw")], check=True)
    (tmp / "app.img").write_bytes(b"APP-IMAGE v1\n".ljust(1 << 20, b"\0"))
    for source, name in ((guest, "guest"), (tmp / "guest-b.raw", "guest-b"), (tmp / "app.img", "app")):
        code, out, err = handle.cli("image", "import", str(source), "--name", name)
        assert code == 0, out + err
    code, public, err = handle.cli("host", "ssh-key")
    sshd = LabSshd(handle.lab, public.strip())
    sshd.start()
    try:
        yield GuestLab(handle, tmp), sshd
    finally:
        sshd.stop()


def test_hosts_that_cannot_be_trusted_or_reached_are_not_registered(guest_lab):
    g, sshd = guest_lab
    pub = g.tmp / "testbox.pub"
    pub.write_text(new_keypair("impostor")[1] + "\n")
    code, _, err = g.cli("host", "add", "testbox", g.h.lab.cfg.address, "--rack", "rack-0", "--host-key", str(pub))
    assert code == 1 and "host key is not the one recorded" in err and "Traceback" not in err, err
    code, _, err = g.cli("host", "add", "ghost", "10.99.0.254", "--rack", "rack-0", "--host-key",
                         str(sshd.work / "host_key.pub"))
    assert code == 1 and "host ghost (10.99.0.254) is unreachable" in err, err
    code, _, err = g.cli("host", "add", "Bad_Name", "10.99.0.1", "--rack", "rack-0", "--host-key", "x y")
    assert code == 2 and "invalid host name" in err, err
    assert [h["name"] for h in json.loads(g.cli("--json", "host", "list")[1])] == [NODE]

    code, out, err = g.cli("host", "add", "testbox", g.h.lab.cfg.address, "--rack", "rack-0", "--host-key",
                           str(sshd.work / "host_key.pub"))
    assert code == 0, err
    hosts = {h["name"]: h for h in json.loads(g.cli("--json", "host", "list")[1])}
    assert hosts["testbox"]["kind"] == "registered" and hosts[NODE]["kind"] == "node"
    assert hosts[NODE]["cores"] == 2, "the host agent reports the node's 2 vCPUs"


def test_deploy_two_roles_on_shared_read_only_bases(guest_lab):
    g, _ = guest_lab
    started = time.monotonic()
    code, out, err = g.cli("deploy", str(g.roles))
    assert code == 0, out + err
    guests = g.guests()
    print(f"\n[timing] deploy of 4 guests: {time.monotonic() - started:.0f}s; ready after: " +
          ", ".join(f"{n} on {x['host']} {x['ready_seconds']}s" for n, x in sorted(guests.items())))
    assert sorted(guests) == ["web-1", "web-2", "web-3", "worker-1"]
    assert all(x["state"] == "ready" for x in guests.values()), guests
    by_host = {h: sorted(n for n, x in guests.items() if x["host"] == h) for h in (NODE, "testbox")}
    assert by_host == {NODE: ["web-1", "web-3"], "testbox": ["web-2", "worker-1"]}, "web spreads over both racks"
    for host in by_host:
        cores = [c for n in by_host[host] for c in guests[n]["cores"]]
        assert sorted(cores) == [0, 1], f"each guest on {host} has a core of its own"
    job = g.jobs()[-1]
    sent = {h: sum(x["bytes"] or 0 for x in job["guests"] if x["host"] == h) for h in by_host}
    image_rows = {i["name"]: i for i in json.loads(g.cli("--json", "image", "list")[1])}
    size = {n: image_rows[n]["size"] for n in ("guest", "guest-b", "app")}
    assert sent[NODE] == size["guest"] + size["app"], "each image goes to a host once"
    assert sent["testbox"] == size["guest"] + size["app"] + size["guest-b"]

    # What the hosts say: each overlay is backed by its role's one base, which is read-only.
    local = g.local()
    try:
        for name in by_host["testbox"]:
            overlay = local.pool.volume(f"{name}.qcow2").path()
            chain = json.loads(subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json",
                                               overlay], check=True, capture_output=True, text=True).stdout)
            base = "guest-b" if name.startswith("worker") else "guest"
            assert [Path(c["filename"]).name for c in chain] == \
                [f"{name}.qcow2", f"base-{image_rows[base]['sha256']}.{image_rows[base]['format']}"]
        web = "web-2"
        assert agent_read(local, web, "/etc/hostname").strip() == web
        assert f"{web} on testbox serves on 8080" in agent_read(local, web, "/var/lib/guest/user-data")
        assert agent_read(local, web, "/dev/vdb").startswith("APP-IMAGE v1"), "the app image is its second disk"
        agent_write(local, web, "/root/marker", "written by the guest\n")
        for name in by_host["testbox"]:
            assert local.running(name)
    finally:
        local.conn.close()
    for sha, fmt in ((image_rows["guest"]["sha256"], "qcow2"), (image_rows["guest-b"]["sha256"], "raw")):
        path = g.h.lab.guest_pool / f"base-{sha}.{fmt}"
        assert oct(path.stat().st_mode & 0o777) == "0o444"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, "a guest's writes reached the base"
    base = g.h.lab.guest_pool / f"base-{image_rows['guest']['sha256']}.qcow2"
    node_chain = json.loads(g.on_node(f"qemu-img info -U --backing-chain --output=json "
                                      f"{g.h.lab.guest_pool}/web-1.qcow2"))
    assert [c["filename"] for c in node_chain] == [f"{g.h.lab.guest_pool}/web-1.qcow2", str(base)]
    listing = g.on_node(f"ls -l {base}; sha256sum {base}; virsh -c qemu:///system list --name")
    assert listing.startswith("-r--r--r--") and image_rows["guest"]["sha256"] in listing
    assert "web-1" in listing and "web-3" in listing
    code, out, _ = g.cli("guest", "console", "web-3")
    assert code == 0 and "provisioner-guest: web-3 up after" in out, "the nested guest's console, over SFTP"


def test_reset_brings_a_guest_back_to_pristine_and_the_same_file_changes_nothing(guest_lab):
    g, _ = guest_lab
    local = g.local()
    try:
        assert agent_read(local, "web-2", "/root/marker") == "written by the guest\n"
        code, out, err = g.cli("guest", "reset", "web-2")
        assert code == 0 and "ready after" in out, out + err
        assert agent_read(local, "web-2", "/root/marker") is None, "reset discards the overlay"
        assert agent_read(local, "web-2", "/etc/hostname").strip() == "web-2", "same identity"
        assert agent_read(local, "web-2", "/dev/vdb").startswith("APP-IMAGE v1")
    finally:
        local.conn.close()

    before, jobs = g.guests(), len(g.jobs())
    code, out, err = g.cli("deploy", str(g.roles))
    assert code == 0 and "nothing to do" in out, out + err
    assert "0 to add, 0 to remove, 0 to roll, 0 to repair, 4 unchanged" in out
    assert len(g.jobs()) == jobs and g.guests() == before

    # A guest its host no longer runs (removed behind the provisioner's back, or its host
    # reimaged) is made again by the next deploy: the hosts are asked, not just the table.
    local = g.local()
    try:
        dom = local.domain("worker-1")
        dom.destroy()
        dom.undefine()
    finally:
        local.conn.close()
    code, out, err = g.cli("deploy", str(g.roles))
    assert code == 0 and "0 to add, 0 to remove, 0 to roll, 1 to repair, 3 unchanged" in out, out + err
    assert g.guests()["worker-1"]["state"] == "ready"


def test_a_host_whose_key_changed_or_that_is_gone_gets_no_change(guest_lab):
    g, sshd = guest_lab
    g.write(web=3, queue="other")  # worker-1's user data changes: a roll on testbox
    before, jobs = g.guests(), len(g.jobs())
    sshd.stop()
    sshd.new_key()
    sshd.start()
    try:
        code, out, err = g.cli("deploy", str(g.roles))
        assert code == 1 and "host testbox (10.99.0.1): its SSH host key is not the one recorded" in err, err
        assert "nothing was changed" in err
        sshd.stop()
        code, out, err = g.cli("deploy", str(g.roles))
        assert code == 1 and "host testbox (10.99.0.1) is unreachable" in err and "nothing was changed" in err, err
        assert g.guests() == before and len(g.jobs()) == jobs
    finally:  # the host as it was registered, whatever happened
        sshd.stop()
        sshd.restore()
        sshd.start()
        g.write(web=3)


def test_a_smaller_count_removes_exactly_one_guest(guest_lab):
    g, _ = guest_lab
    before = g.guests()
    g.write(web=2)
    code, out, err = g.cli("deploy", str(g.roles))
    assert code == 0 and "0 to add, 1 to remove, 0 to roll, 0 to repair, 3 unchanged" in out, out + err
    after = g.guests()
    assert sorted(after) == ["web-1", "web-2", "worker-1"]
    assert all(after[n]["updated_at"] == before[n]["updated_at"] for n in after), "the others were not touched"
    names = g.on_node("virsh -c qemu:///system list --all --name").split()
    assert names == ["web-1"], names

    # guest delete takes a guest off its host; the file still counts it, so deploy makes it
    # again (web spreads by rack: back on testbox, the only other rack).
    code, out, err = g.cli("guest", "delete", "web-2")
    assert code == 0 and "deleted web-2 from testbox" in out, out + err
    assert "web-2" not in g.guests()
    assert not (g.h.lab.guest_pool / "web-2.qcow2").exists()
    assert g.cli("guest", "show", "web-2")[0] == 1
    code, out, err = g.cli("deploy", str(g.roles))
    assert code == 0 and "1 to add, 0 to remove, 0 to roll, 0 to repair, 2 unchanged" in out, out + err
    again = g.guests()["web-2"]
    assert again["state"] == "ready" and again["host"] == "testbox"


def test_a_new_base_rolls_one_upgrade_domain_at_a_time_and_gc_keeps_what_is_used(guest_lab):
    g, _ = guest_lab
    log = g.h.lab.dir / "logs/provisioner.log"

    def started_web1() -> int:
        return log.read_text().count(f"guest web-1: defined and started on {NODE}")

    web1_before = started_web1()
    v2 = g.tmp / "guest-v2.qcow2"
    subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2", str(REPO / "build/images/guest/guest.qcow2"),
                    str(v2)], check=True)
    assert g.cli("image", "import", str(v2), "--name", "guest")[0] == 0
    code, out, err = g.cli("deploy", str(g.roles), "--no-wait")
    assert code == 0 and "0 to add, 0 to remove, 2 to roll, 0 to repair, 1 unchanged" in out, out + err
    job_id = int(re.search(r"deploy job (\d+) started", out).group(1))
    # The daemon is killed while the first upgrade domain's guest boots, and started again.
    end = time.monotonic() + 300
    while not any(x["status"] == "running" and x["message"] == "booting"
                  for x in g.h.client.get(f"/v1/jobs/{job_id}")["guests"]):
        assert time.monotonic() < end, g.h.client.get(f"/v1/jobs/{job_id}")
        time.sleep(0.5)
    os.kill(g.h.lab.load().daemon_pid, signal.SIGKILL)
    time.sleep(1)
    g.h.lab.restart_daemon()
    job = g.h.wait_job(job_id)
    assert job["status"] == "done", job
    rolls = {x["name"]: x for x in job["guests"]}
    assert all(x["status"] == "done" for x in rolls.values()), rolls
    assert started_web1() == web1_before + 1, "web-1 was started once, not again after the restart"
    assert rolls["web-1"]["batch"] != rolls["web-2"]["batch"], "two upgrade domains, two batches"
    first, second = sorted(rolls.values(), key=lambda x: x["batch"])
    assert first["ended_at"] <= second["started_at"], "the second upgrade domain waited for the first"
    images = {f"{i['name']}:{i['version']}": i for i in json.loads(g.cli("--json", "image", "list")[1])}
    guests = g.guests()
    assert {guests[n]["base_sha256"] for n in ("web-1", "web-2")} == {images["guest:2"]["sha256"]}

    old = f"base-{images['guest:1']['sha256']}.qcow2"
    code, out, err = g.cli("--json", "host", "gc", "testbox")
    assert code == 0 and json.loads(out)["removed"] == [old], out + err
    left = sorted(p.name for p in g.h.lab.guest_pool.iterdir() if p.name.startswith("base-"))
    assert left == sorted([f"base-{images['guest:2']['sha256']}.qcow2", f"base-{images['guest-b:1']['sha256']}.raw",
                           f"base-{images['app:1']['sha256']}.raw"])
    code, out, err = g.cli("--json", "host", "gc", NODE)
    assert code == 0 and json.loads(out)["removed"] == [old], out + err
    assert g.cli("--json", "host", "gc", "testbox")[1].count("base-") == 0, "nothing more to remove"
