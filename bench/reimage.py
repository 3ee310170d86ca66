"""Reimage in the lab: wall time for 2 nodes in parallel vs 1 node, the deploy command's
own phase timings inside a real node, and the image bytes a rollback and a
reimage-to-same-image send (goal: 0).

Two racks of one node each, so both nodes are in upgrade domain 0 and `--max-unavailable
100%` puts them in one batch. Every timed run downloads an image new to the nodes, onto a
disk that already has its layout, so the 1-node and 2-node runs do the same work."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from provisioner.client import Client
from tests.lab.variants import patched

NODES = ("lab-r1-n1", "lab-r2-n1")


def _job(client: Client, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    job = client.post(f"/v1/{kind}", body)
    while job["status"] == "running":
        time.sleep(0.5)
        job = client.get(f"/v1/jobs/{job['id']}")
    if job["status"] != "done":
        raise RuntimeError(f"{kind} {body['target']} ended {job['status']}: {job['nodes']}")
    return job


def _served(client: Client) -> int:
    return int(client.get("/v1/stats")["counters"].get("image_bytes_served", 0))


def _deploy_seconds(client: Client, name: str) -> dict[str, float]:
    """The agent's own phase timings for the node's last deploy command."""
    events = client.get(f"/v1/nodes/{name}/events")["events"]
    queued = [e["message"] for e in events if (e["message"] or "").startswith("deploy command ")]
    command = client.get(f"/v1/nodes/{name}/commands/{queued[-1].split()[2]}")
    return dict(command["result"]["seconds"])


def _import(client: Client, path: Path, name: str) -> str:
    return str(client.upload(f"/v1/images?name={name}&filename={path.name}", path, lambda done, total: None)["ref"])


def enroll_lab(lab: Any, client: Client) -> list[str]:
    """Enroll every node of a lab brought up for a bench (IPMI), and wait until each is
    ready; their names."""
    import yaml

    nodes = yaml.safe_load(lab.inventory_file.read_text())["nodes"]
    for node in nodes:
        client.post("/v1/nodes", {"mac": node["mac"], "rack": node["rack"], "name": node["name"], "bmc": {
            "address": node["bmc"]["address"], "username": node["bmc"]["username"], "cipher_suite": 3,
            "password": Path(node["bmc"]["password_file"]).read_text().strip()}})
    for node in nodes:
        while client.get(f"/v1/nodes/{node['name']}")["state"] != "ready":
            time.sleep(0.5)
    return [n["name"] for n in nodes]


def bench_reimage(host_image: Path) -> dict[str, Any]:
    from provisioner.lab.lab import Lab

    lab = Lab()
    lab.down()
    try:
        lab.up(nodes=2, racks=2)
        client = lab.client()
        enroll_lab(lab, client)
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            refs = [_import(client, host_image, "host")]
            for v in ("2", "3"):
                refs.append(_import(client, patched(host_image, Path(tmp) / f"v{v}.qcow2",
                                                    {"/etc/provisioner-variant": v}), "host"))
        both = {"max_unavailable": "100%"}
        _job(client, "reimage", {"target": "all", "image": refs[0], **both})  # layouts made; not timed
        one = _job(client, "reimage", {"target": NODES[0], "image": refs[1]})
        # HTTP to each, as the 1-node run (bench/multicast.py compares multicast with it)
        two = _job(client, "reimage", {"target": "all", "image": refs[2], "multicast": False, **both})
        phases = _deploy_seconds(client, NODES[1])
        before = _served(client)
        rollback = _job(client, "rollback", {"target": "all", **both})
        rollback_bytes = _served(client) - before
        same = _job(client, "reimage", {"target": "all", "image": refs[2], **both})
        same_bytes = _served(client) - before - rollback_bytes

        def wall(job: dict[str, Any]) -> float:
            return round(job["ended_at"] - job["created_at"], 1)

        return {
            "image_bytes": host_image.stat().st_size,
            "reimage_1_node_s": wall(one), "reimage_2_nodes_s": wall(two),
            "ratio_2_vs_1": round(wall(two) / wall(one), 2),
            "agent_deploy_phases_s": phases,
            "rollback_2_nodes_s": wall(rollback), "rollback_image_bytes": rollback_bytes,
            "reimage_same_2_nodes_s": wall(same), "reimage_same_image_bytes": same_bytes,
        }
    finally:
        lab.down()
