"""Guests per role end to end, with real parts only: a lab node enrolled and reimaged to
the host image (its libvirtd runs guests nested, TCG inside TCG; in the tier, the shared
lab's lab-r1-n1 as the nightly run left it), and this machine's own
libvirtd registered as a second host, reached as a remote one (qemu+libssh to an sshd on
the lab bridge, with a host key the operator gives). `provisioner deploy` places two
roles across both racks; the tests then check what the hosts themselves say.

The guests are on the guest network (the node's br0, and the lab bridge for this
machine), the daemon's dnsmasq answers for lab.internal, and the web role has an
endpoint (a VIP on HAProxy). A load generator in the lab's namespace sends requests to
the VIP during a reset, a swap with a staging role, a scale-down and a roll (with a
kill -9 of the daemon in it): none may fail."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import libvirt
import pytest

from provisioner.hypervisor.domains import GuestHost
from provisioner.hypervisor.pool import Pool
from provisioner.sshkeys import new_keypair

from .conftest import LabSshd, agent_exec, agent_read, agent_write, enroll_missing, import_missing, wait_until
from .dashboard import scrape
from .loadgen import Load

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
    endpoints: [{{port: 80, check: /health, interval: 1}}]
  - name: worker
    base: guest-b
    vcpus: 1
    memory_mib: 160
    count: {workers}
    user_data: worker.j2
    vars: {{queue: {queue}}}
"""
STAGING = """
  - name: web-staging
    base: guest-b
    vcpus: 1
    memory_mib: 160
    count: 1
    endpoints: [{port: 80, check: /health, interval: 1}]
"""
DOMAIN = "lab.internal"


class GuestLab:
    def __init__(self, handle, tmp: Path) -> None:
        self.h = handle
        self.tmp = tmp
        self.roles = tmp / "roles.yaml"
        (tmp / "worker.j2").write_text("#cloud-config\n# takes work from {{ queue }}\n")
        (tmp / "web.j2").write_text("#cloud-config\n# {{ guest.name }} on {{ guest.host }} serves on {{ port }}\n")
        self.write(web=3)

    def write(self, web: int, queue: str = "jobs", workers: int = 1, staging: bool = False) -> None:
        self.roles.write_text(ROLES.format(web=web, queue=queue, workers=workers) + (STAGING if staging else ""))

    def endpoints(self) -> dict[str, dict]:
        return {e["name"]: e for e in json.loads(self.cli("--json", "endpoints")[1])}

    def vip_url(self, endpoint: str = "web") -> str:
        return f"http://{self.endpoints()[endpoint]['vip']}/"

    def load(self, endpoint: str = "web") -> Load:
        return Load(self.h.lab.cfg.netns, self.vip_url(endpoint), self.tmp)

    def in_lab(self, *argv: str) -> str:
        """A command run in the lab's namespace (the provisioning network)."""
        return subprocess.run(["ip", "netns", "exec", self.h.lab.cfg.netns, *argv], check=True, capture_output=True,
                              text=True, timeout=60).stdout

    def dig(self, name: str) -> str:
        return self.in_lab("dig", "+short", "+time=2", f"@{self.h.lab.cfg.address}", f"{name}.{DOMAIN}").strip()

    def layout(self) -> dict[str, tuple]:
        """The endpoints without their live health: name -> (role, VIP, port, members)."""
        return {n: (e["role"], e["vip"], e["port"], sorted(m["guest"] for m in e["members"]))
                for n, e in self.endpoints().items()}

    def member(self, guest: str, endpoint: str = "web") -> dict:
        return next(m for m in self.endpoints()[endpoint]["members"] if m["guest"] == guest)

    def cli(self, *argv: str) -> tuple[int, str, str]:
        return self.h.cli(*argv)

    def guests(self) -> dict[str, dict]:
        return {g["name"]: g for g in json.loads(self.cli("--json", "guests")[1])}

    def jobs(self) -> list[dict]:
        return json.loads(self.cli("--json", "job")[1])

    def local(self) -> GuestHost:
        """This machine's libvirtd, directly (to look inside its guests with their agents)."""
        conn = self.h.lab.connect()
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
    nobody = g.h.lab.cfg.unused_address
    code, _, err = g.cli("host", "add", "ghost", nobody, "--rack", "rack-0", "--host-key",
                         str(sshd.work / "host_key.pub"))
    assert code == 1 and f"host ghost ({nobody}) is unreachable" in err, err
    code, _, err = g.cli("host", "add", "Bad_Name", g.h.lab.cfg.address, "--rack", "rack-0", "--host-key", "x y")
    assert code == 2 and "invalid host name" in err, err
    assert [h["name"] for h in json.loads(g.cli("--json", "host", "list")[1])] == [NODE]

    code, out, err = g.cli("host", "add", "testbox", g.h.lab.cfg.address, "--rack", "rack-0", "--host-key",
                           str(sshd.work / "host_key.pub"), "--bridge", g.h.lab.cfg.bridge)
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
    job = g.h.client.get(f"/v1/jobs/{g.jobs()[-1]['id']}")
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


def test_guests_answer_by_address_and_by_name_and_the_vip_serves_the_role(guest_lab):
    g, _ = guest_lab
    guests = g.guests()
    for name, guest in guests.items():
        assert guest["address"], guest
        page = g.in_lab("curl", "-s", "--max-time", "10", f"http://{guest['address']}/").strip()
        assert page == f"{name} role={guest['role']} image={'guest:1' if guest['role'] == 'web' else 'guest-b:1'}"
        assert g.dig(name) == guest["address"], f"{name}.{DOMAIN}"
    nodes = {n["name"]: n for n in g.h.client.get("/v1/nodes")["nodes"]}
    assert g.dig(NODE) == nodes[NODE]["host"]["facts"]["address"]
    assert g.dig("testbox") == g.h.lab.cfg.address
    endpoints = g.endpoints()
    assert list(endpoints) == ["web"], "the worker role has no endpoint"
    web = endpoints["web"]
    assert web["role"] == "web" and web["port"] == 80 and web["dns"] == f"web.{DOMAIN}"
    assert g.dig("web") == web["vip"]
    assert {m["guest"]: m["health"] for m in web["members"]} == {"web-1": "up", "web-2": "up", "web-3": "up"}
    pages = {g.in_lab("curl", "-s", "--max-time", "10", f"http://web.{DOMAIN}/", "--resolve",
                      f"web.{DOMAIN}:80:{web['vip']}").split()[0] for _ in range(9)}
    assert pages == {"web-1", "web-2", "web-3"}, "the VIP spreads requests over the role's guests"
    code, out, _ = g.cli("guest", "show", "web-2")
    assert code == 0 and f"web-2.{DOMAIN}" in out and f"web {web['vip']}:80 up" in out, out
    code, out, _ = g.cli("endpoints")
    assert code == 0 and web["vip"] in out and f"web.{DOMAIN}" in out, out
    # The metrics say the same: guests by role and state, the endpoint's members by health.
    metrics = scrape(g.h)
    for role in {guest["role"] for guest in guests.values()}:
        want = sum(1 for guest in guests.values() if (guest["role"], guest["state"]) == (role, "ready"))
        assert metrics.get(("provisioner_guests", (("role", role), ("state", "ready"))), 0) == want, role
    assert metrics[("provisioner_endpoint_members", (("endpoint", "web:80"), ("health", "up")))] == 3


def test_reset_brings_a_guest_back_to_pristine_and_the_same_file_changes_nothing(guest_lab):
    g, _ = guest_lab
    local = g.local()
    try:
        assert agent_read(local, "web-2", "/root/marker") == "written by the guest\n"
        with g.load() as load:
            code, out, err = g.cli("guest", "reset", "web-2")
            back = time.monotonic() - load.started  # on the load's clock
            time.sleep(6)  # two rounds of the three members at the slowest rate seen (1 request/s)
        print(f"\n[load] reset of web-2: {load.summary()}")
        assert code == 0 and "ready after" in out, out + err
        assert load.failures == [], load.summary()
        assert load.gap("web-2 ") > 2 * load.gap("web-1 "), "web-2 was out of the endpoint while it was reset"
        assert (load.last("web-2 ") or 0) > back, "and back in it once its check passed: " + load.summary()
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
        assert code == 1 and f"host testbox ({g.h.lab.cfg.address}): its SSH host key is not the one recorded" in err, err
        assert "nothing was changed" in err
        sshd.stop()
        code, out, err = g.cli("deploy", str(g.roles))
        assert code == 1 and f"host testbox ({g.h.lab.cfg.address}) is unreachable" in err and "nothing was changed" in err, \
            err
        assert g.guests() == before and len(g.jobs()) == jobs
    finally:  # the host as it was registered, whatever happened
        sshd.stop()
        sshd.restore()
        sshd.start()
        g.write(web=3)


def test_swap_exchanges_production_and_staging_at_once(guest_lab):
    g, _ = guest_lab
    g.write(web=3, workers=0, staging=True)  # worker-1's core on testbox goes to web-staging-1
    code, out, err = g.cli("deploy", str(g.roles))
    assert code == 0 and "1 to add, 1 to remove, 0 to roll, 0 to repair, 3 unchanged" in out, out + err
    before = g.endpoints()
    assert before["web-staging"]["role"] == "web-staging" and before["web-staging"]["vip"] != before["web"]["vip"]
    assert g.guests()["web-staging-1"]["host"] == "testbox"

    code, out, err = g.cli("swap", "web", "worker")
    assert code == 2 and err.strip() == "error: role worker has no endpoint to swap (see 'provisioner endpoints')"
    code, out, err = g.cli("swap", "web", "web-staging", "--dry-run")
    assert code == 0 and f"web ({before['web']['vip']}, web.{DOMAIN}): web -> web-staging" in out, out + err
    assert "dry run: nothing changed" in out and g.endpoints()["web"]["role"] == "web"

    with g.load() as load:
        time.sleep(2)
        code, out, err = g.cli("swap", "web", "web-staging")
        time.sleep(3)
    print(f"\n[load] swap: {load.summary()}")
    assert code == 0, out + err
    assert load.failures == [], load.summary()
    assert load.last("role=web ") < load.first("web-staging-1 "), "all at once: the old role never answered again"
    assert load.last("web-staging-1 ") > load.last("role=web ")
    after = g.endpoints()
    assert (after["web"]["role"], after["web"]["vip"]) == ("web-staging", before["web"]["vip"])
    assert (after["web-staging"]["role"], after["web-staging"]["vip"]) == ("web", before["web-staging"]["vip"])
    assert g.dig("web") == before["web"]["vip"], "the production name stays with the production VIP"

    with g.load() as load:  # and back: staging behind the staging VIP again
        time.sleep(2)
        assert g.cli("swap", "web", "web-staging")[0] == 0
        time.sleep(3)
    print(f"[load] swap back: {load.summary()}")
    assert load.failures == [] and load.last("web-staging-1 ") < load.first("role=web "), load.summary()
    assert g.endpoints()["web"]["role"] == "web"


def test_bad_endpoint_input_is_one_line_and_changes_nothing(guest_lab):
    g, _ = guest_lab
    before_endpoints, before_guests, jobs = g.layout(), g.guests(), len(g.jobs())
    base = ROLES.format(web=3, queue="jobs", workers=0) + STAGING
    empty = "\n  - name: {name}\n    base: guest\n    vcpus: 1\n    memory_mib: 64\n    count: 0\n" \
            "    endpoints: [{{port: {port}, protocol: {protocol}}}]\n"

    def refused(text: str) -> str:
        path = g.tmp / "bad-roles.yaml"
        path.write_text(text)
        code, out, err = g.cli("deploy", str(path))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, out + err
        return err.strip()

    assert "endpoint port 53 clashes with the provisioner's own DNS (dns.port)" in \
        refused(base.replace("endpoints: [{port: 80,", "endpoints: [{port: 53,", 1))
    free = 10 - len(before_endpoints)  # network.endpoint_range holds 10 VIPs in the lab
    many = base + "".join(empty.format(name=f"extra-{i}", port=80, protocol="http") for i in range(free + 1))
    assert f"network.endpoint_range {g.h.lab.cfg.endpoint_range} is exhausted: all 10 addresses are taken, none " \
           f"left for role extra-{free}'s endpoint" in refused(many)
    assert g.layout() == before_endpoints and g.guests() == before_guests and len(g.jobs()) == jobs

    # A role with an endpoint of another kind (a TCP port, no guests yet) cannot swap with web.
    (g.tmp / "db-roles.yaml").write_text(base + empty.format(name="db", port=5432, protocol="tcp"))
    assert g.cli("deploy", str(g.tmp / "db-roles.yaml"))[0] == 0
    assert "db" in g.endpoints() and g.dig("db") == g.endpoints()["db"]["vip"]
    code, out, err = g.cli("swap", "web", "db")
    assert code == 2 and err.strip() == ("error: roles web and db have different endpoints (web: 80/http; db: "
                                         "5432/tcp): a swap needs the same ports and protocols; nothing was changed")
    assert g.endpoints()["web"]["role"] == "web" and g.endpoints()["db"]["role"] == "db"
    assert g.cli("deploy", str(g.roles))[0] == 0, "the db role goes again"
    assert g.layout() == before_endpoints and g.dig("db") == "", "its name went with it"


def test_a_smaller_count_removes_exactly_one_guest(guest_lab):
    g, _ = guest_lab
    before = g.guests()
    g.write(web=2, workers=0, staging=True)
    with g.load() as load:
        code, out, err = g.cli("deploy", str(g.roles))
        time.sleep(2)
    print(f"\n[load] scale-down: {load.summary()}")
    assert code == 0 and "0 to add, 1 to remove, 0 to roll, 0 to repair, 3 unchanged" in out, out + err
    assert load.failures == [], load.summary()
    assert load.last("web-3 ") < load.last("web-1 ") - 1, "web-3 left the endpoint before it went"
    after = g.guests()
    assert sorted(after) == ["web-1", "web-2", "web-staging-1"]
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
    load = g.load()
    load.__enter__()
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
    time.sleep(2)
    load.__exit__(None, None, None)
    print(f"\n[load] roll (with a kill -9 of the daemon): {load.summary()}")
    assert job["status"] == "done", job
    assert load.failures == [], load.summary()
    # One upgrade domain at a time: while web-1 (domain 0) was out, web-2 answered on
    # guest:1; web-2 left only once web-1 answered on guest:2, and from then on only
    # guest:2 answered.
    assert load.last("web-1 role=web image=guest:1") < load.last("web-2 role=web image=guest:1")
    assert load.first("web-1 role=web image=guest:2") < load.first("web-2 role=web image=guest:2")
    assert load.last("image=guest:1") < load.first("web-2 role=web image=guest:2")
    print(f"[timing] roll: web-1 on guest:2 after {load.first('web-1 role=web image=guest:2'):.0f}s, web-2 after "
          f"{load.first('web-2 role=web image=guest:2'):.0f}s of load")
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


def test_a_guest_whose_service_stops_leaves_its_endpoint_and_comes_back(guest_lab):
    g, _ = guest_lab
    local = g.local()
    try:
        with g.load() as load:
            time.sleep(1)
            stopped = time.monotonic()
            assert agent_exec(local, "web-2", "/usr/bin/killall", "httpd") == 0
            wait_until("web-2 out of its endpoint", lambda: g.member("web-2")["health"] == "down", timeout=180,
                       every=0.2)
            left = time.monotonic() - stopped
            time.sleep(2)
            started = time.monotonic()
            assert agent_exec(local, "web-2", "/usr/sbin/httpd", "-p", "80", "-h", "/var/www") == 0
            wait_until("web-2 back in its endpoint", lambda: g.member("web-2")["health"] == "up", timeout=180,
                       every=0.2)
            back = time.monotonic() - started
            time.sleep(2)
    finally:
        local.conn.close()
    print(f"\n[timing] health check every 1 s (2 failures out, 2 passes in): web-2 left its endpoint {left:.1f}s "
          f"after its service stopped, and was back {back:.1f}s after it started again; {load.summary()}")
    assert load.failures == [], "a refused connection is tried again on another guest: " + load.summary()
    assert load.last("web-2 ") > load.first("web-2 ") and len(load.seen()) == 2


# The host agent is python3 under busybox init (which would start it again if it exited).
FREEZE_AGENT = "for p in $(pidof python3); do grep -q provisioner.agent /proc/$p/cmdline && kill -{signal} $p; done; true"


def _events(g, kinds: tuple[str, ...], since: float = 0.0) -> list[dict]:
    return [e for e in g.h.client.get(f"/v1/nodes/{NODE}/events")["events"]
            if e["event"] in kinds and e["ts"] >= since]


def test_a_host_whose_agent_alone_stops_is_not_fenced(guest_lab):
    """The host agent frozen (SIGSTOP) on the node that runs web-1: its heartbeats stop,
    but its BMC says on and web-1 passes its checks. One signal is not enough."""
    g, _ = guest_lab
    since = time.time()
    g.on_node(FREEZE_AGENT.format(signal="STOP"))
    try:
        said = wait_until("the host watch's verdict", lambda: _events(g, ("health", "fence"), since), timeout=90)
        node = g.h.client.get(f"/v1/nodes/{NODE}")
        print(f"\n[timing] agent stopped: '{said[0]['message']}' after {said[0]['ts'] - since:.0f}s")
        assert [e["event"] for e in said] == ["health"] and said[0]["message"].startswith("suspect: "), said
        assert "its BMC says the power is on and 1 of its 1 guests in an endpoint pass their health checks: " \
               "not fenced on one signal" in said[0]["message"], said
        assert node["state"] == "active" and node["agent"] == "host lost", node
        assert g.guests()["web-1"]["host"] == NODE and g.guests()["web-1"]["state"] == "ready"
        time.sleep(5)  # and it stays so
        assert _events(g, ("fence", "heal"), since) == []
    finally:
        g.on_node(FREEZE_AGENT.format(signal="CONT"))
    wait_until("the agent heard again", lambda: _events(g, ("health",), since)[-1]["message"].startswith(
        "host agent heard again"), timeout=60)
    assert g.h.client.get(f"/v1/nodes/{NODE}")["agent"] == "host alive"


def test_reimage_moves_a_hosts_guests_first_and_drops_no_request(guest_lab):
    g, _ = guest_lab
    g.write(web=2, workers=0)  # web-staging-1 goes: a free core on testbox for web-1
    code, out, err = g.cli("deploy", str(g.roles))
    assert code == 0 and "0 to add, 1 to remove, 0 to roll, 0 to repair, 2 unchanged" in out, out + err
    before = g.guests()
    assert before["web-1"]["host"] == NODE and before["web-2"]["host"] == "testbox"

    code, out, err = g.cli("reimage", NODE, "--dry-run")
    assert code == 0 and f"guest web-1 (web): move {NODE} -> testbox" in out, out + err
    assert g.guests() == before and g.h.client.get(f"/v1/nodes/{NODE}")["state"] == "active"

    started = time.monotonic()
    with g.load() as load:
        code, out, err = g.cli("reimage", NODE)
        time.sleep(2)
    print(f"\n[load] reimage of {NODE} with web-1 on it: {load.summary()}; {time.monotonic() - started:.0f}s")
    assert code == 0 and "guests: 1 done" in out, out + err
    assert load.failures == [], load.summary()
    assert load.last("web-1 ") > load.first("web-1 "), "web-1 answered before and after its move"
    after = g.guests()
    web1 = after["web-1"]
    assert web1["host"] == "testbox" and web1["state"] == "ready", web1
    assert web1["address"] == before["web-1"]["address"] and web1["mac"] == before["web-1"]["mac"]
    assert web1["why"].startswith(f"moved from {NODE} at ") and f"because its host {NODE} was reimaged" in web1["why"]
    assert g.dig("web-1") == web1["address"]
    assert after["web-2"]["updated_at"] == before["web-2"]["updated_at"], "web-2 was not touched"
    assert g.h.client.get(f"/v1/nodes/{NODE}")["state"] == "active"
    code, out, _ = g.cli("guest", "show", "web-1")
    assert f"moved from {NODE}" in out, out


def test_a_dead_host_is_fenced_and_its_guests_healed_through_a_kill_9(guest_lab):
    """web-1 back on the node (testbox has room again), then the node's domain destroyed
    under load: fenced through its BMC, web-1 made again on testbox with its address and
    endpoint, the daemon killed in the middle of it and started again."""
    g, _ = guest_lab
    assert g.cli("guest", "delete", "web-1")[0] == 0
    code, out, err = g.cli("deploy", str(g.roles))  # web spreads by rack: back on the node
    assert code == 0 and "1 to add" in out, out + err
    before = g.guests()
    assert before["web-1"]["host"] == NODE, before
    vbmc_log, daemon_log = g.h.lab.dir / "logs/vbmcd.log", g.h.lab.dir / "logs/provisioner.log"
    log_at, daemon_at = vbmc_log.stat().st_size, daemon_log.stat().st_size
    conn = g.h.lab.connect()
    try:
        dom = conn.lookupByName(NODE)
        with g.load() as load:
            time.sleep(2)
            since, killed = time.time(), time.monotonic()
            dom.destroy()  # a hard failure: the host is gone at once
            down = wait_until("web-1 marked down", lambda: g.member("web-1")["health"] == "down" and time.monotonic(),
                         timeout=60, every=0.2)
            fenced = wait_until("the fence", lambda: _events(g, ("fence",), since), timeout=120)
            fenced_at = time.monotonic()
            job = wait_until("the heal job", lambda: next((j for j in g.jobs() if j["kind"] == "heal"
                                                      and j["created_at"] >= since), None), timeout=60)
            wait_until("web-1 being made on testbox", lambda: any(
                x["status"] == "running" for x in g.h.client.get(f"/v1/jobs/{job['id']}")["guests"]), timeout=60,
                every=0.2)
            os.kill(g.h.lab.load().daemon_pid, signal.SIGKILL)  # in the middle of healing
            time.sleep(1)
            g.h.lab.restart_daemon()
            healed = g.h.wait_job(job["id"], timeout=300)
            healed_at = time.monotonic()
            wait_until("full membership", lambda: all(m["health"] == "up" for m in g.endpoints()["web"]["members"]),
                  timeout=60, every=0.2)
            full = time.monotonic()
            time.sleep(3)
    finally:
        state = conn.lookupByName(NODE).state()[0]
        conn.close()
    print(f"\n[timing] healing: web-1 marked down {down - killed:.1f}s after the kill; fenced after "
          f"{fenced_at - killed:.1f}s; heal job done after {healed_at - killed:.1f}s (a kill -9 of the daemon in "
          f"it); full membership after {full - killed:.1f}s; {load.summary()}")
    assert healed["status"] == "done", healed
    late = [t - killed for t in load.failed_at() if t > down + 1.0]
    assert late == [], f"requests failed after the check took web-1 out: {late}; {load.summary()}"
    assert state == libvirt.VIR_DOMAIN_SHUTOFF
    # Through its BMC: the watch asked it (the host is off), the fence powered it off and
    # read the state back. The BMC's log has the reads; the power-off itself is not in it,
    # because pyghmi sends no chassis command for a machine its BMC already calls off.
    assert f"Get power state called for domain {NODE}" in vbmc_log.read_text()[log_at:]
    assert re.search(r"BMC \S+: power off", daemon_log.read_text(errors="replace")[daemon_at:]), "the fence's command"
    node = g.h.client.get(f"/v1/nodes/{NODE}")
    assert node["state"] == "out-for-repair" and "its BMC says the power is off" in node["last_error"], node
    assert fenced[0]["message"].startswith("fenced: powered off through its BMC (IPMI"), fenced
    after = g.guests()
    web1 = after["web-1"]
    assert web1["host"] == "testbox" and web1["state"] == "ready", web1
    assert (web1["address"], web1["mac"]) == (before["web-1"]["address"], before["web-1"]["mac"])
    assert f"moved from {NODE}" in web1["why"] and "out for repair" in web1["why"], web1
    assert g.dig("web-1") == web1["address"]
    local = g.local()
    try:
        assert sorted(n for n in local.running_guests() if n.startswith("web")) == ["web-1", "web-2"], \
            "web-1 runs once, on testbox"
    finally:
        local.conn.close()
    code, out, _ = g.cli("show", NODE)
    assert "out-for-repair" in out and "heal job" in out, out
    code, out, err = g.cli("reimage", NODE, "--dry-run")  # how it comes back
    assert code == 0 and "batch 1: lab-r1-n1" in out and "guest" not in out, out + err
