#!/usr/bin/env python3
"""Scale: N simulated nodes through the real API on one daemon (fake power, no DHCP),
their agents played over the real agent and host APIs by a small event-driven simulator
that follows the daemon's event feed (a node "boots" when its step says the daemon waits
for its agent). Per size: the daemon's CPU per node to enroll, inspect and reimage the
fleet, nodes per second, list routes' latency, idle CPU and peak RSS. The baseline is
the smallest size, run side by side in the same run: flat means every size's CPU per
node within 1.5x of it.

    sudo .venv/bin/python bench/scale.py --nodes 100,1000,10000 [--db sqlite,postgresql]

(or `bench/run.py --only scale`). PostgreSQL runs as a throwaway server (tests/pgserver.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provisioner.client import Client  # noqa: E402
from provisioner.lab.postgres import PgServer  # noqa: E402
from tests.simagents import SimAgents  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """`provisioner serve` as its own process, so its CPU and memory are its own."""

    def __init__(self, work: Path, sets: list[str]) -> None:
        self.work = work
        self.port = free_port()
        self.log = (work / "daemon.log").open("ab")
        args = [sys.executable, "-m", "provisioner", "serve", "--data-dir", str(work / "data"),
                "--listen", "127.0.0.1", "--http-port", str(self.port),
                "--tftp-port", str(free_port(socket.SOCK_DGRAM)), "--socket", str(work / "api.sock")]
        for item in ["power.driver=fake", "dhcp.enabled=false", "power.min_interval=0",
                     "server.log_level=WARNING", "server.workers=16", *sets]:
            args += ["--set", item]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)
        self.client = Client(f"unix://{work / 'api.sock'}", timeout=120)
        end = time.monotonic() + 30
        while True:
            try:
                self.client.get("/v1/health")
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > end or self.proc.poll() is not None:
                    raise RuntimeError((work / "daemon.log").read_text()[-2000:])
                time.sleep(0.1)

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def rss_peak_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _parallel(fn: Callable[[Any], Any], items: list[Any], threads: int = 8) -> None:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(fn, items):
            pass


def _latency(client: Client, path: str, rounds: int = 15) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        client.get(path)
        samples.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(statistics.median(samples), 1), "max_ms": round(max(samples), 1)}


def run_size(n: int, work: Path, sets: list[str]) -> dict[str, Any]:
    daemon = Daemon(work, sets)
    agents: SimAgents | None = None
    try:
        client = daemon.client
        racks = max(1, n // 40)
        names = [f"n{i:05d}" for i in range(n)]
        macs = {name: f"52:54:{(i >> 24) & 255:02x}:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"
                for i, name in enumerate(names)}
        agents = SimAgents(daemon.client, daemon.port, macs)
        out: dict[str, Any] = {"nodes": n, "racks": racks}

        def phase(label: str, start: Callable[[], None], state: str, timeout: float) -> None:
            cpu, wall = daemon.cpu(), time.monotonic()
            start()
            agents.wait(state, n, timeout)  # type: ignore[union-attr]
            took, used = time.monotonic() - wall, daemon.cpu() - cpu
            out[label] = {"cpu_ms_per_node": round(used / n * 1000, 2), "nodes_per_s": round(n / took, 1),
                          "wall_s": round(took, 1)}
            print(f"  {n} nodes: {label}: {out[label]}", file=sys.stderr, flush=True)

        def enroll(i_name: tuple[int, str]) -> None:
            i, name = i_name
            client.post("/v1/nodes", {"mac": macs[name], "rack": f"rack-{i % racks:03d}", "name": name,
                                      "inspect": False,
                                      "bmc": {"driver": "ipmi", "address": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                                              "username": "admin", "password": "secret"}})

        cpu, wall = daemon.cpu(), time.monotonic()
        _parallel(enroll, list(enumerate(names)))
        took, used = time.monotonic() - wall, daemon.cpu() - cpu
        out["enroll"] = {"cpu_ms_per_node": round(used / n * 1000, 2), "nodes_per_s": round(n / took, 1),
                         "wall_s": round(took, 1)}
        print(f"  {n} nodes: enroll: {out['enroll']}", file=sys.stderr, flush=True)
        phase("inspect", lambda: _parallel(lambda name: client.post(f"/v1/nodes/{name}/inspect"), names),
              "ready", 60 + n * 0.2)
        image = work / "host.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
        client.upload(f"/v1/images?name=host&filename={image.name}", image, lambda done, total: None)
        job: dict[str, Any] = {}
        phase("reimage", lambda: job.update(client.post("/v1/reimage", {
            "target": "all", "image": "host", "max_unavailable": "100%", "max_parallel": "64"})),
            "active", 120 + n * 0.3)
        end = time.monotonic() + 60
        while client.get(f"/v1/jobs?limit=1")["jobs"][-1]["status"] == "running" and time.monotonic() < end:
            time.sleep(0.5)
        summary = client.get("/v1/jobs?limit=1")["jobs"][-1]
        out["reimage"]["job"] = {"status": summary["status"], "members": summary["node_counts"]}
        agents.stop()
        agents = None
        first = client.get("/v1/nodes?limit=100")
        middle = client.get(f"/v1/nodes?limit=100&cursor={first['next']}") if first["next"] else first
        out["list"] = {
            "nodes page of 100": _latency(client, "/v1/nodes?limit=100"),
            "nodes next page": _latency(client, f"/v1/nodes?limit=100&cursor={middle['next'] or ''}"),
            "nodes of a rack": _latency(client, "/v1/nodes?rack=rack-000&limit=100"),
            "nodes by state": _latency(client, "/v1/nodes?state=active&limit=100"),
            "one node": _latency(client, f"/v1/nodes/{names[n // 2]}"),
            "jobs": _latency(client, "/v1/jobs"),
            "events, a page of 500": _latency(client, "/v1/events?after=0&limit=500"),
            f"the reimage job, all {n} members": _latency(client, f"/v1/jobs/{job['id']}", rounds=5),
        }
        # The whole fleet in pages, as `provisioner nodes` reads it.
        t = time.perf_counter()
        cursor, total = "", 0
        while True:
            page = client.get("/v1/nodes?limit=500" + (f"&cursor={cursor}" if cursor else ""))
            total += len(page["nodes"])
            if not page["next"]:
                break
            cursor = page["next"]
        out["list"]["whole fleet, pages of 500"] = {"ms": round((time.perf_counter() - t) * 1000, 1), "nodes": total}
        time.sleep(2)
        cpu, wall = daemon.cpu(), time.monotonic()
        time.sleep(15)
        out["idle_cpu_percent"] = round((daemon.cpu() - cpu) / (time.monotonic() - wall) * 100, 2)
        out["rss_peak_mib"] = round(daemon.rss_peak_mib(), 1)
        print(f"  {n} nodes: list {out['list']}, idle {out['idle_cpu_percent']} %, "
              f"RSS {out['rss_peak_mib']} MiB", file=sys.stderr, flush=True)
        return out
    finally:
        if agents is not None:
            agents.stop()
        daemon.stop()


def bench_scale(sizes: list[int], engines: list[str], sets: list[str] | None = None) -> dict[str, Any]:
    """Each engine at each size; the baseline is the engine's smallest size."""
    out: dict[str, Any] = {"baseline": f"{sizes[0]} nodes on the same engine, in the same run"}
    for engine in engines:
        pg = PgServer().start() if engine == "postgresql" else None
        runs = []
        try:
            for n in sizes:
                work = Path(tempfile.mkdtemp(prefix=f"pv-scale-{n}-", dir="/tmp"))
                extra = [f"database.url={pg.create(f'scale{n}')}"] if pg is not None else []
                try:
                    print(f"bench scale: {n} nodes on {engine}", file=sys.stderr, flush=True)
                    runs.append(run_size(n, work, [*extra, *(sets or [])]))
                finally:
                    shutil.rmtree(work, ignore_errors=True)
        finally:
            if pg is not None:
                pg.stop()
        base = runs[0]
        for run in runs:
            run["ratio_to_baseline"] = {k: round(run[k]["cpu_ms_per_node"] / max(base[k]["cpu_ms_per_node"], 1e-9), 2)
                                        for k in ("enroll", "inspect", "reimage")}
        out[engine] = runs
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", default="100,1000,10000")
    parser.add_argument("--db", default="sqlite,postgresql",
                        help="engines: sqlite, postgresql (a throwaway postgresql-15, fsync off)")
    parser.add_argument("--set", action="append", default=[], help="a daemon setting, as serve --set")
    args = parser.parse_args()
    result = bench_scale([int(x) for x in args.nodes.split(",")], args.db.split(","), args.set)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
