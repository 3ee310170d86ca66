"""BMC command latency in the lab: Redfish (sushy-tools' emulator, through our sushy driver)
vs IPMI (virtualbmc, through our pyghmi driver), side by side in one run, on one lab of two
BIOS nodes (`lab up --bmc mixed`: rack-1's node behind virtualbmc, rack-2's behind the
emulator). Both emulators drive the same libvirtd, so what differs is the protocol and
its client: a status call, a one-time network boot override, and a power cycle (off, then
on, each verified, as the power manager does it). The commands run inside the lab's
namespace, where the BMCs listen; `python bench/bmc.py --probe ...` is that inner part."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _creds(node: dict[str, Any]) -> Any:
    from provisioner.models import BmcCredentials, BmcDriver, parse_bmc_address, parse_redfish_address
    from provisioner.secrets import Secret
    bmc = node["bmc"]
    password = Secret(Path(bmc["password_file"]).read_text().strip())
    if bmc.get("driver") == "redfish":
        host, port = parse_redfish_address(bmc["address"])
        return BmcCredentials(host, port, bmc["username"], password, driver=BmcDriver.REDFISH, system=bmc["system"])
    host, port = parse_bmc_address(bmc["address"])
    return BmcCredentials(host, port, bmc["username"], password, int(bmc.get("cipher_suite", 17)))


def _timed(fn: Callable[[], Any], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def probe(inventory: Path, ca: str, rounds: int) -> dict[str, Any]:
    """Inside the namespace: each operation `rounds` times per protocol, alternating."""
    import yaml
    from provisioner.models import BootDevice, PowerAction
    from provisioner.power.ipmi import IpmiPowerDriver
    from provisioner.power.manager import PowerManager
    from provisioner.power.redfish import RedfishPowerDriver
    nodes = yaml.safe_load(inventory.read_text())["nodes"]
    managers = {"ipmi": PowerManager(IpmiPowerDriver(), min_interval=0.0, verify_timeout=60),
                "redfish": PowerManager(RedfishPowerDriver(ca_bundle=ca), min_interval=0.0, verify_timeout=60)}
    by_kind = {n["bmc"].get("driver", "ipmi"): _creds(n) for n in nodes}
    ops: dict[str, Callable[[PowerManager, Any], Any]] = {
        "status": lambda m, b: m.status(b),
        "boot override": lambda m, b: m.set_boot_device(b, BootDevice.NETWORK),
        "power cycle": lambda m, b: m.apply(b, PowerAction.CYCLE),
    }
    results: dict[str, Any] = {}
    for op, fn in ops.items():
        for kind in ("ipmi", "redfish"):
            results.setdefault(op, {})[kind] = _timed(lambda: fn(managers[kind], by_kind[kind]),
                                                      rounds if op != "power cycle" else max(3, rounds // 4))
    for kind in ("ipmi", "redfish"):
        managers[kind].apply(by_kind[kind], PowerAction.OFF)
    return results


def bench_bmc(rounds: int = 20) -> dict[str, Any]:
    from provisioner.lab.lab import Lab
    lab = Lab()
    lab.down()
    try:
        lab.up(nodes=2, racks=2, memory_mib=512, vcpus=1, firmware="bios", bmc="mixed")
        proc = subprocess.run(["ip", "netns", "exec", lab.cfg.netns, sys.executable, __file__, "--probe",
                               str(lab.inventory_file), str(lab.redfish.ca), str(rounds)],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        raw = json.loads(proc.stdout)
    finally:
        lab.down()
    summary: dict[str, Any] = {}
    for op, kinds in raw.items():
        row = {kind: {"median_ms": round(statistics.median(t) * 1000, 1),
                      "max_ms": round(max(t) * 1000, 1), "n": len(t)} for kind, t in kinds.items()}
        row["redfish_vs_ipmi"] = round(row["redfish"]["median_ms"] / row["ipmi"]["median_ms"], 2)
        summary[op] = row
    return summary


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--probe":
        print(json.dumps(probe(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))))
    else:
        print(json.dumps(bench_bmc(), indent=1))
