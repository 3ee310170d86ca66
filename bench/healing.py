"""Service healing in the lab: a host's hard failure under load, timed step by step.

One lab node, reimaged to the host image, runs web-1 nested; this machine's libvirtd,
registered as a host, runs web-2; the web role has an endpoint (a VIP on HAProxy) with a
health check every second. A load generator sends 20 requests a second to the VIP, each
on a new connection. The node's domain is destroyed (the host is gone at once), and the
run records, from that moment:
  down      HAProxy's check takes web-1 out of the endpoint
  dead      the host watch declares the host dead (agent silent past
            agent.host_lost_after, 20 s in the lab, and its BMC says off)
  fenced    powered off through its BMC and verified off
  healed    the heal job has made web-1 again on this machine, fresh from the base
  full      the endpoint has both members up again
and the failed requests, and the image bytes the heal sent to the new host. The
baselines are the peers' published figures (they cannot run here): Azure's service
healing moves role instances off a failed host in under 15 minutes, and Metal3's
remediation waits 300 s (its default timeout) before it even reboots a node, which
moves nothing. Ironic and MAAS mark the node and stop there."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from endpoints import _cli

REPO = Path(__file__).resolve().parents[1]
ROLES = """
roles:
  - name: web
    base: guest
    vcpus: 1
    memory_mib: 160
    count: 2
    upgrade_domains: 2
    endpoints: [{port: 80, check: /health, interval: 1}]
"""
NODE = "lab-r1-n1"


def bench_healing(work: Path, host_image: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from provisioner.lab.lab import Lab
    from tests.lab.conftest import LabSshd
    from tests.waiting import wait_until
    from tests.lab.loadgen import Load

    from reimage import enroll_lab

    def until(what: str, ready: Any) -> Any:
        return wait_until(what, ready, timeout=600, every=0.2)

    lab = Lab()
    lab.down()
    lab.up(nodes=1, racks=1)
    sshd = None
    try:
        client = lab.client()
        enroll_lab(lab, client)
        _cli(lab, "image", "import", str(host_image), "--name", "host")
        _cli(lab, "reimage", NODE, "--image", "host")
        sshd = LabSshd(lab, client.get("/v1/ssh-key")["public_key"])
        sshd.start()
        _cli(lab, "host", "add", "testbox", lab.cfg.address, "--rack", "rack-0", "--host-key",
             str(sshd.work / "host_key.pub"), "--bridge", lab.cfg.bridge)
        _cli(lab, "image", "import", str(REPO / "build/images/guest/guest.qcow2"), "--name", "guest")
        roles = work / "roles.yaml"
        roles.write_text(ROLES)
        _cli(lab, "deploy", str(roles))
        hosts = {g["name"]: g["host"] for g in client.get("/v1/guests")["guests"]}
        if hosts != {"web-1": NODE, "web-2": "testbox"}:
            raise RuntimeError(f"unexpected placement: {hosts}")
        vip = client.get("/v1/endpoints")["endpoints"][0]["vip"]

        def members() -> dict[str, str]:
            web = client.get("/v1/endpoints")["endpoints"][0]
            return {m["guest"]: m["health"] for m in web["members"]}

        def events(kind: str, since: float) -> list[dict[str, Any]]:
            return [e for e in client.get(f"/v1/nodes/{NODE}/events")["events"]
                    if e["event"] == kind and e["ts"] >= since]

        conn = lab.connect()
        try:
            with Load(lab.cfg.netns, f"http://{vip}/", work, rate=20) as load:
                time.sleep(2)
                wall, t0 = time.time(), time.monotonic()
                conn.lookupByName(NODE).destroy()
                down = until("web-1 marked down", lambda: members().get("web-1") == "down" and time.monotonic())
                dead = until("declared dead", lambda: [e for e in events("health", wall)
                                                        if e["message"].startswith("dead: ")])
                fenced = until("fenced", lambda: events("fence", wall))
                job = until("the heal job", lambda: next((j for j in client.get("/v1/jobs")["jobs"]
                                                           if j["kind"] == "heal" and j["created_at"] >= wall), None))
                while job["status"] == "running":
                    time.sleep(0.2)
                    job = client.get(f"/v1/jobs/{job['id']}")
                healed = time.monotonic()
                full = until("full membership", lambda: set(members().values()) == {"up"} and time.monotonic())
                time.sleep(2)
        finally:
            conn.close()
        late = [round(t - t0, 1) for t in load.failed_at() if t > down + 1.0]
        return {
            "job": job["status"], "guest_bytes_moved": sum(g["bytes"] or 0 for g in job["guests"]),
            "requests": load.result["requests"], "failed": len(load.failures), "failed_after_down": late,
            "failures": [f"{t:.1f}s {why}" for t, why in load.failures[:5]],
            "seconds_from_kill": {"down": round(down - t0, 1), "dead": round(dead[0]["ts"] - wall, 1),
                                  "fenced": round(fenced[0]["ts"] - wall, 1), "healed": round(healed - t0, 1),
                                  "full": round(full - t0, 1)},
            "events": [e["message"] for e in client.get(f"/v1/nodes/{NODE}/events")["events"]
                       if e["event"] in ("health", "fence", "heal") and e["ts"] >= wall],
            "baselines_s": {"azure_service_healing_max": 900, "metal3_remediation_timeout": 300}}
    finally:
        if sshd is not None:
            sshd.stop()
        lab.down()


if __name__ == "__main__":
    print(json.dumps(bench_healing(Path(sys.argv[1]), Path(sys.argv[2])), indent=1))
