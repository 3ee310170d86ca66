"""Several controllers, one fleet, on a real PostgreSQL (Debian's postgresql-15, started
by the test in a temporary directory on a unix socket): three daemons each serve a rack;
one is killed with -9 in the middle of a reimage it runs; after its lease its rack and its
job go on under the others, each node written once and none stuck; a fourth daemon
started later joins and takes its rack's work. The same unit tests run on PostgreSQL too.
Nodes' agents are simulated over the real agent and host APIs (tests/simagents.py)."""

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from provisioner.errors import NotFound
from provisioner.images.catalog import Catalog
from provisioner.secrets import Secret
from provisioner.store import Store
from provisioner.lab.postgres import PgServer
from tests.simagents import SimAgents
from tests.waiting import wait_until

from .conftest import DaemonProcess

REPO = Path(__file__).resolve().parents[2]
RACKS = {"rack-a": "ctl-a", "rack-b": "ctl-b", "rack-c": "ctl-c"}


@pytest.fixture(scope="module")
def pg():
    server = PgServer().start()
    yield server
    server.stop()


def test_the_unit_tier_passes_on_postgresql(pg):
    """The store's tests, and every unit test that keeps state, against PostgreSQL."""
    url = pg.create("unit")
    env = dict(os.environ, PROVISIONER_TEST_POSTGRESQL=url)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout


def _enroll(client, name, mac, rack, i):
    client.post("/v1/nodes", {"mac": mac, "rack": rack, "name": name,
                              "bmc": {"driver": "ipmi", "address": f"10.9.{i // 250}.{i % 250 + 1}",
                                      "username": "admin", "password": "secret"}})


def _events(client, name):
    return client.get(f"/v1/nodes/{name}/events")["events"]


def test_three_controllers_one_fleet_a_killed_one_is_taken_over_and_a_fourth_joins(pg, workdir):
    url = pg.create("fleet")
    common = [f"database.url={url}", f"server.secret_file={workdir / 'secret.key'}", "controller.lease=3"]
    daemons = {}
    try:
        for rack, name in RACKS.items():
            daemons[name] = DaemonProcess(workdir / name, *common, f"controller.name={name}",
                                          f"controller.racks={rack}")
            (workdir / name).mkdir()
            daemons[name].start()  # one after the other: the first makes the shared key
        a, b = daemons["ctl-a"], daemons["ctl-b"]
        names = {f"{rack[-1]}{i}": (rack, f"52:54:00:aa:{ord(rack[-1]):02x}:{i:02x}")
                 for rack in RACKS for i in range(3)}
        agents = SimAgents(a.client, a.http_port, {n: mac for n, (_, mac) in names.items()})
        try:
            for i, (name, (rack, mac)) in enumerate(names.items()):
                _enroll(a.client, name, mac, rack, i)  # all through one controller's API
            agents.wait("ready", len(names), 60)
            # Each node was powered by its own rack's controller, whichever API enrolled it.
            for name, (rack, _) in names.items():
                powered = [e for e in _events(a.client, name) if (e["message"] or "").startswith("one-time network boot")]
                assert powered and {e["controller"] for e in powered} == {RACKS[rack]}, (name, powered)
            listed = {c["name"]: c for c in a.client.get("/v1/controllers")["controllers"]}
            assert {n: c["racks"] for n, c in listed.items()} == {"ctl-a": ["rack-a"], "ctl-b": ["rack-b"],
                                                                 "ctl-c": ["rack-c"]}
            image = workdir / "host.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
            a.client.upload(f"/v1/images?name=host&filename={image.name}", image, lambda done, total: None)

            # A reimage of the whole fleet, started on ctl-b (so it runs the job); rack-b's
            # agents wait until ctl-b is dead.
            agents.hold = {n for n, (rack, _) in names.items() if rack == "rack-b"}
            since = time.time()
            job = b.client.post("/v1/reimage", {"target": "all", "image": "host", "max_unavailable": "100%",
                                                "max_parallel": "100%"})
            assert a.client.get("/v1/controllers")["controllers"][1]["jobs"] == [job["id"]]
            # The first batch (upgrade domain 0 of each rack) holds a rack-b node: the job
            # waits for it, with the later batches pending.
            agents.wait_held(1, 30)
            wait_until("rack-a's and rack-c's first nodes", lambda: agents.reached.get("active", 0) >= 2, 60, 0.2)
            b.kill9()
            killed = time.monotonic()
            agents.release()
            agents.wait("active", len(names), 90)
            done = wait_until("the job to end", lambda: (j := a.client.get(f"/v1/jobs/{job['id']}"))["status"] != "running" and j, 60, 0.2)
            assert done["status"] == "done", [(m["name"], m["status"], m["message"]) for m in done["nodes"]]
            assert [m["status"] for m in done["nodes"]] == ["done"] * len(names)
            taken = time.monotonic() - killed
            listed = {c["name"]: c for c in a.client.get("/v1/controllers")["controllers"]}
            assert not listed["ctl-b"]["alive"] and listed["ctl-b"]["racks"] == []
            heir = next(n for n, c in listed.items() if "rack-b" in c["racks"])
            assert heir in ("ctl-a", "ctl-c")
            for name, (rack, _) in names.items():
                node = a.client.get(f"/v1/nodes/{name}")
                assert node["state"] == "active" and node["job_id"] is None, node
                events = [e for e in _events(a.client, name) if e["ts"] >= since]
                queued = [e for e in events if (e["message"] or "").startswith("deploy command ")]
                written = [e for e in events if (e["message"] or "").startswith("image laid down")]
                actives = [e for e in events if e["to_state"] == "active" and e["event"] != "step"]
                assert len(queued) == len(written) == len(actives) == 1, (name, events)  # each written once
                if rack == "rack-b":  # finished by the controller that took its rack over
                    assert actives[0]["controller"] != "ctl-b" or written[0]["controller"] != "ctl-b"
            print(f"ctl-b killed: its rack and job finished under {heir} {taken:.1f} s later (lease 3 s)")

            # A fourth controller joins later and takes its rack's work.
            d = DaemonProcess(workdir / "ctl-d", *common, "controller.name=ctl-d", "controller.racks=rack-d")
            (workdir / "ctl-d").mkdir()
            daemons["ctl-d"] = d
            d.start()
            new = {"d0": "52:54:00:aa:64:00", "d1": "52:54:00:aa:64:01"}
            agents.macs.update(new)
            for i, (name, mac) in enumerate(new.items()):
                _enroll(a.client, name, mac, "rack-d", 100 + i)
            agents.wait("ready", 2, 60)
            for name in new:
                powered = [e for e in _events(a.client, name) if (e["message"] or "").startswith("one-time network boot")]
                assert {e["controller"] for e in powered} == {"ctl-d"}, powered
            # ...and reimages them with an image it never had: it fetches it from another
            # controller by sha256, verified, and its agents get the same bytes.
            sha = a.client.get("/v1/images/host")["sha256"]
            assert not (workdir / "ctl-d/data/images" / sha).exists()
            agents.move_to(d.client, d.http_port)
            agents.download = True
            job = d.client.post("/v1/reimage", {"target": "rack-d", "image": "host", "max_unavailable": "100%"})
            agents.wait("active", 2, 60)
            done = wait_until("rack-d's job", lambda: (j := d.client.get(f"/v1/jobs/{job['id']}"))["status"] != "running" and j, 60, 0.2)
            assert done["status"] == "done" and agents.downloaded == {"d0": True, "d1": True}, (done, agents.downloaded)
            assert (workdir / "ctl-d/data/images" / sha).stat().st_size == image.stat().st_size
            assert "fetched from controller ctl-a" in (workdir / "ctl-d/daemon.log").read_text()
            out = subprocess.run([sys.executable, "-m", "provisioner", "--api", f"unix://{workdir / 'ctl-a/api.sock'}",
                                  "controllers"], capture_output=True, text=True, cwd=REPO).stdout
            lines = {line.split()[0]: line for line in out.splitlines()[1:]}
            assert "rack-d" in lines["ctl-d"] and "alive" in lines["ctl-d"] and "lost" in lines["ctl-b"], out
            assert "(this one)" in lines["ctl-a"], out
            assert not agents.errors, agents.errors
        finally:
            agents.stop()
    finally:
        for daemon in daemons.values():
            daemon.stop()


class _Peer(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_an_image_from_a_lying_controller_is_refused_and_nothing_is_kept(workdir):
    """A controller that sends other bytes than the sha256 names (a corrupt disk, or a
    hostile host on the network) is refused; the next one that sends the right bytes wins."""
    store = Store(workdir / "db.sqlite")
    good = b"QFI\xfb" + b"x" * 4096
    sha = hashlib.sha256(good).hexdigest()
    store.add_image(name="host", version="1", sha256=sha, fmt="qcow2", virtual_size=1 << 20, size=len(good),
                    source="test")
    servers = []
    for body in (b"QFI\xfb" + b"y" * 4096, good):
        handler = type("Peer", (_Peer,), {"body": body})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    peers = [("liar", f"http://127.0.0.1:{servers[0].server_port}")]
    catalog = Catalog(workdir / "images", store, peer_token=Secret("t"), peers=lambda: list(peers))
    try:
        with pytest.raises(NotFound, match="liar: controller liar sent 4100 bytes hashing to"):
            catalog.local(sha)
        assert not catalog.path(sha).exists() and list((workdir / "images/.incoming").iterdir()) == []
        peers.append(("honest", f"http://127.0.0.1:{servers[1].server_port}"))
        assert catalog.local(sha).read_bytes() == good
    finally:
        for server in servers:
            server.shutdown()
        store.close()
