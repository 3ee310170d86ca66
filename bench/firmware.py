"""BIOS vs UEFI vs UEFI with Secure Boot, side by side in one lab: enroll-to-ready and
reimage wall time of each kind of node, one node at a time (so each has the machine to
itself), the kinds alternating round by round.

The lab is `lab up --nodes 4 --racks 2 --firmware mixed --bmc mixed --secure-boot mixed`:
lab-r1-n1 is BIOS behind IPMI (virtualbmc), lab-r2-n1 UEFI behind Redfish (sushy-tools'
emulator), lab-r2-n2 UEFI with Secure Boot on behind Redfish (lab-r1-n2 is not used).
So the UEFI figures include the Redfish BMC, and the Secure Boot figures the BMC switching
it off for the maintenance image and on for the disk. Every timed reimage downloads an
image new to the node, onto a disk that already has its layout."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from provisioner.client import Client
from tests.lab.variants import patched

KINDS = {"bios+ipmi": "lab-r1-n1", "uefi+redfish": "lab-r2-n1", "uefi+redfish+secure-boot": "lab-r2-n2"}


def _wait_state(client: Client, name: str, states: set[str], timeout: float = 900) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        doc = client.get(f"/v1/nodes/{name}")
        if doc["state"] in states:
            return doc
        if time.monotonic() > end:
            raise RuntimeError(f"{name} stuck in {doc['state']} {doc['step']}: {doc['last_error']}")
        time.sleep(0.2)


def _enroll_body(node: dict[str, Any]) -> dict[str, Any]:
    bmc = node["bmc"]
    body = {"address": bmc["address"], "username": bmc["username"],
            "password": Path(bmc["password_file"]).read_text().strip()}
    if bmc.get("driver") == "redfish":
        body.update(driver="redfish", system=bmc["system"])
    else:
        body.update(driver="ipmi", cipher_suite=3)
    return {"mac": node["mac"], "rack": node["rack"], "name": node["name"], "bmc": body}


def _reimage(client: Client, name: str, ref: str) -> float:
    job = client.post("/v1/reimage", {"target": name, "image": ref})
    while job["status"] == "running":
        time.sleep(0.2)
        job = client.get(f"/v1/jobs/{job['id']}")
    if job["status"] != "done":
        raise RuntimeError(f"reimage {name} ended {job['status']}: {job['nodes']}")
    return float(job["ended_at"] - job["created_at"])


def bench_firmware(host_image: Path, rounds: int = 2) -> dict[str, Any]:
    from provisioner.lab.lab import Lab
    import yaml

    lab = Lab()
    lab.down()
    try:
        lab.up(nodes=4, racks=2, firmware="mixed", bmc="mixed", secure_boot="mixed")
        client = lab.client()
        inventory = {n["name"]: n for n in yaml.safe_load(lab.inventory_file.read_text())["nodes"]}
        enroll: dict[str, float] = {}
        for kind, name in KINDS.items():
            started = time.monotonic()
            client.post("/v1/nodes", _enroll_body(inventory[name]))
            if _wait_state(client, name, {"ready", "inspect-failed"})["state"] != "ready":
                raise RuntimeError(f"{name} did not enroll")
            enroll[kind] = round(time.monotonic() - started, 1)
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            refs = [str(client.upload(f"/v1/images?name=host&filename={path.name}", path,
                                      lambda done, total: None)["ref"])
                    for path in [host_image, *(patched(host_image, Path(tmp) / f"v{i}.qcow2",
                                                       {"/etc/provisioner-variant": str(i)})
                                               for i in range(2, rounds + 2))]]
        for name in KINDS.values():  # the first reimage makes the disk's layout: not timed
            _reimage(client, name, refs[0])
        reimage: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for ref in refs[1:]:
            for kind, name in KINDS.items():
                reimage[kind].append(round(_reimage(client, name, ref), 1))
        base = statistics.median(reimage["bios+ipmi"])
        return {
            "image_bytes": host_image.stat().st_size,
            "enroll_to_ready_s": enroll,
            "reimage_s": reimage,
            "reimage_median_s": {k: statistics.median(v) for k, v in reimage.items()},
            "reimage_ratio_vs_bios": {k: round(statistics.median(v) / base, 2) for k, v in reimage.items()},
            "enroll_ratio_vs_bios": {k: round(v / enroll["bios+ipmi"], 2) for k, v in enroll.items()},
        }
    finally:
        lab.down()
