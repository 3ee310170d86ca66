#!/usr/bin/env python3
"""Benchmarks, each against a named baseline run side by side in the same run:
  http   a 200 MB artifact fetched by 1 and 8 concurrent curl clients: ours vs nginx
  tftp   20 concurrent downloads of ipxe.efi at block sizes 512 and 1432: ours (tftpy) vs dnsmasq
  enroll enroll-to-ready of one lab node, broken down by phase from the parts' records
  laydown the agent laying the host image down vs dd and qemu-img convert (bench/laydown.py)
  reimage reimage of 1 lab node vs 2 in parallel, rollback and reimage-to-same (bench/reimage.py)
  guests  a guest on a shared 1 GiB / 20 GiB base vs cp --sparse and qemu-img convert (bench/guests.py)
  bmc    Redfish (sushy-emulator) vs IPMI (virtualbmc) command latency in the lab (bench/bmc.py)
  firmware enroll-to-ready and reimage of a BIOS, a UEFI and a Secure Boot node in one lab (bench/firmware.py)
  multicast egress and wall time of a reimage of 1-4 nodes: one multicast session vs HTTP to each (bench/multicast.py)
  endpoints requests/s through a role's VIP (HAProxy) vs straight to its guests; a roll's pace under load (bench/endpoints.py)
  healing a host destroyed under load: time to fence, heal and full membership, failed requests, bytes moved,
          beside the peers' published figures (bench/healing.py)
  scale  100, 1,000 and 10,000 simulated nodes through the real API on one daemon, SQLite and PostgreSQL:
         daemon CPU per node (vs the 100-node run), list latency, idle CPU, RSS (bench/scale.py)
  dashboard  the dashboard's pages at 100 and 1,000 simulated nodes, signed in (bench/dashboard.py)
Run as root: `make bench` (or sudo .venv/bin/python bench/run.py [--only http,tftp,...]).
Results go to bench/results/latest.json and are printed as Markdown."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provisioner.boot.accesslog import dnsmasq_time, parse_time  # noqa: E402

from bmc import bench_bmc  # noqa: E402
from endpoints import bench_endpoints  # noqa: E402
from firmware import bench_firmware  # noqa: E402
from guests import bench_guests  # noqa: E402
from healing import bench_healing  # noqa: E402
from laydown import bench_laydown  # noqa: E402
from multicast import bench_multicast  # noqa: E402
from reimage import bench_reimage  # noqa: E402
from scale import bench_scale  # noqa: E402
from dashboard import bench_dashboard  # noqa: E402

HTTP_PORT, NGINX_PORT, TFTP_PORT = 18481, 18482, 16969


def wait_http(url: str, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if subprocess.run(["curl", "-s", "-o", "/dev/null", url]).returncode == 0:  # any answer
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


class Servers:
    """Our daemon and the baselines, each its own process, on loopback."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen] = []

    def spawn(self, args: list[str], log: str) -> subprocess.Popen:
        proc = subprocess.Popen(args, stdout=(self.work / log).open("ab"), stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def ours(self, artifacts: Path) -> None:
        self.spawn([sys.executable, "-m", "provisioner", "serve", "--data-dir", str(self.work / "data"),
                    "--listen", "127.0.0.1", "--http-port", str(HTTP_PORT), "--tftp-port", str(TFTP_PORT),
                    "--socket", str(self.work / "api.sock"), "--set", "dhcp.enabled=false",
                    "--set", "power.driver=fake", "--set", f"boot.artifacts_dir={artifacts}",
                    "--set", "server.log_level=WARNING",
                    # All 20 TFTP clients come from 127.0.0.1: one address, as no PXE network has.
                    "--set", "tftp.max_per_client=64"], "ours.log")
        wait_http(f"http://127.0.0.1:{HTTP_PORT}/v1/health")

    def nginx(self, root: Path) -> None:
        conf = self.work / "nginx.conf"
        conf.write_text(f"""worker_processes auto; daemon off; pid {self.work}/nginx.pid; error_log {self.work}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on;
  server {{ listen 127.0.0.1:{NGINX_PORT}; root {root}; location / {{ }} }} }}
""")
        self.spawn(["nginx", "-c", str(conf), "-p", str(self.work)], "nginx.log")
        wait_http(f"http://127.0.0.1:{NGINX_PORT}/")

    def dnsmasq_tftp(self) -> None:
        self.spawn(["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--enable-tftp",
                    "--tftp-root=/usr/lib/ipxe", "--listen-address=127.0.0.1", "--bind-interfaces",
                    "--user=root", f"--pid-file={self.work}/dnsmasq.pid", "--log-facility=-"], "dnsmasq.log")
        time.sleep(0.5)

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def parallel(commands: list[list[str]]) -> float:
    """Wall time for all commands started together; each must succeed."""
    start = time.monotonic()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(proc.args)} failed: {err.decode()[:200]}")
    return time.monotonic() - start


def bench_http(work: Path, mb: int, rounds: int) -> dict:
    root = work / "artifacts"
    (root / "maintenance").mkdir(parents=True)
    blob = root / "maintenance/bench.img"
    with blob.open("wb") as fh:
        for _ in range(mb):
            fh.write(os.urandom(1 << 20))
    for path in (work, root, root / "maintenance", blob):  # nginx's workers run unprivileged
        path.chmod(0o755)
    servers = Servers(work)
    try:
        servers.ours(root)
        servers.nginx(root)
        urls = {"provisioner": f"http://127.0.0.1:{HTTP_PORT}/boot/maintenance/bench.img",
                "nginx": f"http://127.0.0.1:{NGINX_PORT}/maintenance/bench.img"}
        out: dict = {"file_mb": mb, "rounds": rounds, "results": {}}
        for clients in (1, 8):
            rates: dict[str, list[float]] = {k: [] for k in urls}
            for _ in range(rounds):
                for name, url in urls.items():  # interleaved so both see the same machine
                    wall = parallel([["curl", "-sf", "-o", "/dev/null", url]] * clients)
                    rates[name].append(clients * mb / wall)
            med = {k: statistics.median(v) for k, v in rates.items()}
            out["results"][f"{clients}_clients"] = {
                "provisioner_MBps": round(med["provisioner"]), "nginx_MBps": round(med["nginx"]),
                "ratio": round(med["provisioner"] / med["nginx"], 2)}
        return out
    finally:
        servers.stop()


def tftp_command(block_size: int, port: str, dest: Path) -> list[str]:
    """A client command: tftp-hpa for plain 512-byte blocks, atftp to negotiate blksize
    the way PXE firmware and iPXE do (iPXE asks for 1432)."""
    if block_size == 512:
        return ["tftp", "127.0.0.1", port, "-m", "binary", "-c", "get", "ipxe.efi", str(dest)]
    return ["atftp", "--option", f"blksize {block_size}", "-g", "-r", "ipxe.efi", "-l", str(dest),
            "127.0.0.1", port]


def bench_tftp(work: Path, clients: int, rounds: int) -> dict:
    servers = Servers(work)
    size = Path("/usr/lib/ipxe/ipxe.efi").stat().st_size
    try:
        servers.ours(work / "artifacts")
        servers.dnsmasq_tftp()
        out_dir = work / "tftp-out"
        out_dir.mkdir()
        ports = {"provisioner": str(TFTP_PORT), "dnsmasq": "69"}
        results = {}
        for block_size in (512, 1432):
            walls: dict[str, list[float]] = {k: [] for k in ports}
            for _ in range(rounds):
                for name, port in ports.items():
                    dests = [out_dir / f"{name}-{block_size}-{i}" for i in range(clients)]
                    walls[name].append(parallel([tftp_command(block_size, port, d) for d in dests]))
                    for dest in dests:
                        assert dest.stat().st_size == size, "short TFTP download"
                        dest.unlink()
            med = {k: statistics.median(v) for k, v in walls.items()}
            results[f"blksize_{block_size}"] = {
                "provisioner_s": round(med["provisioner"], 2), "dnsmasq_s": round(med["dnsmasq"], 2),
                "ratio": round(med["dnsmasq"] / med["provisioner"], 2)}
        return {"file": "ipxe.efi", "file_bytes": size, "clients": clients, "rounds": rounds,
                "results": results}
    finally:
        servers.stop()


def bench_enroll() -> dict:
    from provisioner.lab.lab import Lab
    import yaml
    lab = Lab()
    lab.down()
    try:
        lab.up(nodes=1, racks=1)
        node = yaml.safe_load(lab.inventory_file.read_text())["nodes"][0]
        client = lab.client()
        body = {"mac": node["mac"], "rack": node["rack"], "name": node["name"], "bmc": {
            "address": node["bmc"]["address"], "username": node["bmc"]["username"], "cipher_suite": 3,
            "password": Path(node["bmc"]["password_file"]).read_text().strip()}}
        t_request = time.time()
        client.post("/v1/nodes", body)
        while client.get(f"/v1/nodes/{node['name']}")["state"] not in ("ready", "inspect-failed"):
            time.sleep(0.2)
        t_seen_ready = time.time()
        events = client.get(f"/v1/nodes/{node['name']}/events")["events"]
        logs = lab.dir / "data/logs"
        mac = node["mac"]

        def event(pred) -> float:
            return next(e["ts"] for e in events if pred(e))

        t_inspect = event(lambda e: e["event"] == "inspect")
        t_powered = event(lambda e: (e["message"] or "").startswith("powered on"))
        t_lookup = event(lambda e: e["event"] == "agent")
        t_done = event(lambda e: e["event"] == "done")
        dhcp = [ln for ln in (logs / "dnsmasq.log").read_text().splitlines() if mac in ln]
        t_discover = dnsmasq_time(next(ln for ln in dhcp if "DHCPDISCOVER" in ln))
        t_ack = dnsmasq_time(next(ln for ln in dhcp if "DHCPACK" in ln))
        ip = re.search(r"DHCPACK\(\S+\) (\S+)", next(ln for ln in dhcp if "DHCPACK" in ln)).group(1)
        tftp = [ln.split() for ln in (logs / "tftp.log").read_text().splitlines() if f" {ip} " in ln]
        t_tftp = parse_time(tftp[0][0])
        http = [ln.split() for ln in (logs / "http-access.log").read_text().splitlines() if f" {ip} " in ln]
        boot_reqs = [h for h in http if h[3].startswith("/boot/")]
        t_script = parse_time(boot_reqs[0][0]) - float(boot_reqs[0][6])
        t_initrd_end = parse_time(next(h for h in boot_reqs if h[3].endswith("initrd.img"))[0])
        transfer_bytes = sum(int(h[5]) for h in boot_reqs)
        server_time = sum(float(h[6]) for h in http)  # our handling of every request from the node
        phases = {
            "power-on (IPMI: one-time PXE, power cycle, verified)": t_powered - t_inspect,
            "firmware start to DHCP offer (emulated BIOS + iPXE ROM)": t_discover - t_powered,
            "DHCP (discover to ack)": t_ack - t_discover,
            "boot loader: iPXE fetches boot.ipxe over TFTP": t_tftp - t_ack,
            "per-node script + kernel + initramfs over HTTP": t_initrd_end - t_script,
            "maintenance OS boot to agent lookup": t_lookup - t_initrd_end,
            "agent inspection and report": t_done - t_lookup,
        }
        return {
            "total_s": round(t_done - t_inspect, 1), "enroll_call_to_ready_seen_s": round(t_seen_ready - t_request, 1),
            "phases_s": {k: round(v, 2) for k, v in phases.items()},
            "provisioner_own_time_s": round((t_powered - t_inspect) + server_time, 2),
            "boot_bytes_over_http": transfer_bytes,
            "note": "dnsmasq log times are whole seconds; firmware and DHCP phases are +-1 s",
        }
    finally:
        lab.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only",
                        default="http,tftp,enroll,laydown,reimage,guests,bmc,firmware,multicast,endpoints,healing,"
                                "scale,dashboard")
    parser.add_argument("--host-image", type=Path, default=REPO / "build/images/host/host.qcow2")
    parser.add_argument("--http-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict = {"machine": {"cores": os.cpu_count(), "kernel": os.uname().release}, "date": time.strftime("%F")}
    for name in args.only.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"pv-bench-{name}-", dir="/tmp"))
        try:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            if name == "http":
                results["http"] = bench_http(work, args.http_mb, args.rounds)
            elif name == "tftp":
                results["tftp"] = bench_tftp(work, 20, args.rounds)
            elif name == "enroll":
                results["enroll"] = bench_enroll()
            elif name == "laydown":
                servers = Servers(work)
                try:
                    results["laydown"] = bench_laydown(work, args.host_image, servers, HTTP_PORT, args.rounds)
                finally:
                    servers.stop()
            elif name == "reimage":
                results["reimage"] = bench_reimage(args.host_image)
            elif name == "guests":
                results["guests"] = bench_guests(work, args.rounds)
            elif name == "bmc":
                results["bmc"] = bench_bmc()
            elif name == "firmware":
                results["firmware"] = bench_firmware(args.host_image)
            elif name == "multicast":
                results["multicast"] = bench_multicast(args.host_image)
            elif name == "endpoints":
                results["endpoints"] = bench_endpoints(work, args.rounds)
            elif name == "healing":
                results["healing"] = bench_healing(work, args.host_image)
            elif name == "scale":
                results["scale"] = bench_scale([100, 1000, 10000], ["sqlite", "postgresql"])
            elif name == "dashboard":
                results["dashboard"] = bench_dashboard([100, 1000])
        finally:
            shutil.rmtree(work, ignore_errors=True)
    out = REPO / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    latest = out / "latest.json"
    # Benchmarks run one at a time keep the others' last figures (each is dated).
    merged = json.loads(latest.read_text()) if latest.exists() else {}
    for name in args.only.split(","):
        if name in results:
            results[name]["date"] = results["date"]
    merged.update(results)
    latest.write_text(json.dumps(merged, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
