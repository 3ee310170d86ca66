#!/usr/bin/env python3
"""Dashboard: its pages' answer times over HTTP at N simulated nodes (the fleet brought
to active through the real API by the simulated agents of bench/scale.py), with a
signed-in session as a browser has. Baselines, run side by side in the same run: the
same pages at the smallest size, and the API's own page of nodes at each size (what the
CLI reads). The goal: every page under 200 ms at 1,000 nodes, and the racks pages flat
beyond (pages of whole racks, at most 500 tiles each).

    sudo .venv/bin/python bench/dashboard.py --nodes 100,1000,10000

(or `bench/run.py --only dashboard`)."""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from scale import Daemon, _parallel  # noqa: E402
from tests.simagents import SimAgents  # noqa: E402


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, len(body)


def _body(port: int, path: str, headers: dict[str, str]) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path, headers=headers)
    text = conn.getresponse().read().decode(errors="replace")[:500]
    conn.close()
    return text


def _timed(port: int, path: str, headers: dict[str, str], rounds: int = 15) -> dict[str, Any]:
    samples, size, status = [], 0, 0
    for _ in range(rounds):
        t = time.perf_counter()
        status, size = _get(port, path, headers)
        samples.append((time.perf_counter() - t) * 1000)
    if status not in (200, 204):
        raise RuntimeError(f"{path}: HTTP {status}: " + _body(port, path, headers))
    return {"p50_ms": round(statistics.median(samples), 1), "max_ms": round(max(samples), 1), "bytes": size}


def run_size(n: int, work: Path) -> dict[str, Any]:
    daemon = Daemon(work, [])
    agents: SimAgents | None = None
    try:
        client = daemon.client
        racks = max(1, n // 40)
        names = [f"n{i:05d}" for i in range(n)]
        macs = {name: f"52:54:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}" for i, name in enumerate(names)}
        agents = SimAgents(client, daemon.port, macs)
        _parallel(lambda i_name: client.post("/v1/nodes", {
            "mac": macs[i_name[1]], "rack": f"rack-{i_name[0] % racks:03d}", "name": i_name[1], "inspect": False,
            "bmc": {"driver": "ipmi", "address": f"10.0.{(i_name[0] >> 8) & 255}.{i_name[0] & 255}",
                    "username": "admin", "password": "secret"}}), list(enumerate(names)))
        _parallel(lambda name: client.post(f"/v1/nodes/{name}/inspect"), names)
        agents.wait("ready", n, 60 + n * 0.2)
        image = work / "host.qcow2"
        import subprocess
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
        client.upload(f"/v1/images?name=host&filename={image.name}", image, lambda done, total: None)
        job = client.post("/v1/reimage", {"target": "all", "image": "host", "max_unavailable": "100%",
                                          "max_parallel": "64"})
        agents.wait("active", n, 120 + n * 0.3)
        end = time.monotonic() + 60
        while client.get(f"/v1/jobs/{job['id']}")["status"] == "running" and time.monotonic() < end:
            time.sleep(0.5)
        agents.stop()
        agents = None

        token = (work / "data" / "operator.token").read_text().strip()
        conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
        conn.request("POST", "/ui/login", body=urllib.parse.urlencode({"token": token}),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        resp.read()
        cookie = {"Cookie": resp.getheader("Set-Cookie", "").split(";")[0]}
        conn.close()
        last = client.get("/v1/events?after=0&limit=1")["last"]
        pages = {
            "racks, the first page": "/ui/racks",
            "racks, the last page": "/ui/racks?page=999999",
            "changes, none": f"/ui/changes?after={last}",
            "changes, the last 100 events": f"/ui/changes?after={max(0, last - 100)}",
            "one node": f"/ui/nodes/{names[n // 2]}",
            "jobs": "/ui/jobs",
            f"the reimage job, {n} members": f"/ui/jobs/{job['id']}",
            "images": "/ui/images",
            "roles": "/ui/roles",
        }
        out: dict[str, Any] = {"nodes": n, "pages": {k: _timed(daemon.port, p, cookie) for k, p in pages.items()}}
        bearer = {"Authorization": f"Bearer {token}"}
        out["api_baseline"] = {"GET /v1/nodes, a page of 500": _timed(daemon.port, "/v1/nodes?limit=500", bearer),
                               f"GET /v1/nodes, {min(n, 5000)} (every node, at most a page)":
                                   _timed(daemon.port, f"/v1/nodes?limit={min(n, 5000)}", bearer)}
        print(f"  {n} nodes: {json.dumps(out)}", file=sys.stderr, flush=True)
        return out
    finally:
        if agents is not None:
            agents.stop()
        daemon.stop()


def bench_dashboard(sizes: list[int]) -> dict[str, Any]:
    runs = []
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"pv-dash-{n}-", dir="/tmp"))
        try:
            print(f"bench dashboard: {n} nodes", file=sys.stderr, flush=True)
            runs.append(run_size(n, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    base = runs[0]
    for run in runs:
        run["ratio_to_baseline"] = {k: round(v["p50_ms"] / max(base["pages"][k]["p50_ms"], 0.1), 2)
                                    for k, v in run["pages"].items() if k in base["pages"]}
        run["slowest_page_p50_ms"] = max(v["p50_ms"] for v in run["pages"].values())
    return {"baseline": f"the same pages at {sizes[0]} nodes in the same run; the API's page of nodes at each size",
            "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", default="100,1000")
    args = parser.parse_args()
    print(json.dumps(bench_dashboard([int(x) for x in args.nodes.split(",")]), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
