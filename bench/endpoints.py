"""A role endpoint's cost and a roll's pace, in the lab, side by side in the same run:
  rps       requests per second through the role's VIP (HAProxy) vs straight to its
            guests (the client going round them itself), same client, same guests,
            rounds taking turns; the ratio is the load balancer's overhead
  roll      a roll of the role to a new base version, 2 guests in 2 upgrade domains,
            under a steady load on the VIP: the time from "roll started" to each
            upgrade domain's guests answering on the new version, and failed requests
Guests run on this machine's libvirtd, registered as a host on the lab bridge (TCG, not
nested), so what is measured is the endpoint, not a nested boot."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ROLES = """
roles:
  - name: web
    base: guest
    vcpus: 1
    memory_mib: 128
    count: 2
    upgrade_domains: 2
    endpoints: [{port: 80, check: /health, interval: 1}]
"""


def _netns(lab: Any, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", lab.cfg.netns, *argv], check=True, capture_output=True,
                          text=True).stdout


def _load(lab: Any, urls: list[str], seconds: float, threads: int) -> dict[str, Any]:
    out = _netns(lab, sys.executable, str(REPO / "bench/httpload.py"), "--threads", str(threads), "--seconds",
                 str(seconds), *urls)
    return json.loads(out)


def _cli(lab: Any, *argv: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "provisioner", "--api", f"unix://{lab.cfg.socket}", *argv],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"provisioner {' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def bench_endpoints(work: Path, rounds: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from provisioner.lab.lab import Lab
    from tests.lab.conftest import LabSshd
    from tests.lab.loadgen import Load

    lab = Lab()
    lab.down()
    lab.up(nodes=1, racks=1, memory_mib=256)
    sshd = None
    try:
        client = lab.client()
        sshd = LabSshd(lab, client.get("/v1/ssh-key")["public_key"])
        sshd.start()
        _cli(lab, "host", "add", "testbox", lab.cfg.address, "--rack", "rack-0", "--host-key",
             str(sshd.work / "host_key.pub"), "--bridge", lab.cfg.bridge)
        guest = REPO / "build/images/guest/guest.qcow2"
        _cli(lab, "image", "import", str(guest), "--name", "guest")
        roles = work / "roles.yaml"
        roles.write_text(ROLES)
        _cli(lab, "deploy", str(roles))
        guests = {g["name"]: g["address"] for g in client.get("/v1/guests")["guests"]}
        vip = client.get("/v1/endpoints")["endpoints"][0]["vip"]
        direct = [f"http://{a}/" for a in sorted(guests.values())]
        result: dict[str, Any] = {"guests": len(guests), "rounds": rounds, "seconds_per_round": 10}
        for threads in (8, 1):  # 8: as many requests as the client can make; 1: one at a time (latency)
            sides: dict[str, list[dict[str, Any]]] = {"vip": [], "direct": []}
            for _ in range(rounds):
                for side, urls in (("vip", [f"http://{vip}/"]), ("direct", direct)):
                    sides[side].append(_load(lab, urls, 10, threads))
            rps = {side: statistics.median(r["rps"] for r in runs) for side, runs in sides.items()}
            result[f"threads_{threads}"] = {
                "vip": sides["vip"], "direct": sides["direct"], "rps_vip": rps["vip"], "rps_direct": rps["direct"],
                "ratio": round(rps["vip"] / rps["direct"], 2),
                "p50_ms_vip": statistics.median(r["p50_ms"] for r in sides["vip"]),
                "p50_ms_direct": statistics.median(r["p50_ms"] for r in sides["direct"]),
                "failures": sum(r["failures"] for runs in sides.values() for r in runs)}

        v2 = work / "guest-v2.qcow2"
        subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2", str(guest), str(v2)], check=True)
        _cli(lab, "image", "import", str(v2), "--name", "guest")
        with Load(lab.cfg.netns, f"http://{vip}/", work, rate=20) as load:
            entered = time.monotonic()  # about the load's own zero: its first request has been made
            time.sleep(1)
            t0 = time.monotonic()
            _cli(lab, "deploy", str(roles))
            took = time.monotonic() - t0
            time.sleep(1)
        offset = t0 - entered
        rolled = {name: load.first(f"{name} role=web image=guest:2") for name in sorted(guests)}
        result["roll"] = {"seconds": round(took, 1), "requests": load.result["requests"],
                          "failures": len(load.failures),
                          "new_version_answers_after_s": {n: None if t is None else round(t - offset, 1)
                                                          for n, t in rolled.items()}}
        return result
    finally:
        if sshd is not None:
            sshd.stop()
        lab.down()
