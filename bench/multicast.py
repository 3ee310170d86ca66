"""Multicast vs HTTP unicast in the lab: egress bytes and wall time of a reimage of 1 to
4 nodes in one batch, each count run both ways side by side in the same lab.

Four BIOS nodes, one per rack, so all are in upgrade domain 0 and `--max-unavailable
100%` puts them in one batch. A first reimage gives every disk its layout (not timed).
Every timed job then sends a version of the 200 MiB host image new to its nodes, so
both sides do the same work; they take turns at each count. Egress is what left the
management host for the image: our HTTP server's own byte counter plus, for multicast,
what the sender put on the wire (its own report, retransmissions included). The wall
time is the job's, from its creation to its end; the session time is the sender's,
from its first receiver to its end; the agent's image phase is its own timing."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from provisioner.client import Client
from tests.lab.variants import patched

from reimage import _import, _job, _served, enroll_lab  # noqa: E402

COUNTS = (1, 2, 3, 4)


def _image_phase(client: Client, names: list[str]) -> float:
    """The slowest agent's own time for the image (received, verified) in the last job."""
    worst = 0.0
    for name in names:
        events = client.get(f"/v1/nodes/{name}/events")["events"]
        queued = [e["message"] for e in events if (e["message"] or "").startswith("deploy command ")]
        command = client.get(f"/v1/nodes/{name}/commands/{queued[-1].split()[2]}")
        worst = max(worst, float(command["result"]["seconds"].get("image", 0.0)))
    return round(worst, 1)


def bench_multicast(host_image: Path, counts: tuple[int, ...] = COUNTS) -> dict[str, Any]:
    from provisioner.lab.lab import Lab

    lab = Lab()
    lab.down()
    try:
        lab.up(nodes=max(counts), racks=max(counts))
        client = lab.client()
        names = enroll_lab(lab, client)
        size = host_image.stat().st_size
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            first = _import(client, host_image, "host")
            _job(client, "reimage", {"target": "all", "image": first, "max_unavailable": "100%"})  # layouts

            runs: list[dict[str, Any]] = []
            for count in counts:
                for way in ("http", "multicast"):
                    if way == "multicast" and count < 2:
                        continue  # a session needs two receivers: one node is HTTP either way
                    variant = f"{count}-{way}"
                    ref = _import(client, patched(host_image, Path(tmp) / f"{variant}.qcow2",
                                                  {"/etc/provisioner-variant": variant}), "host")
                    for i, name in enumerate(names):
                        key = "add_tags" if i < count else "remove_tags"
                        client.post(f"/v1/nodes/{name}/labels", {key: ["bench"]})
                    before = _served(client)
                    job = _job(client, "reimage", {"target": "tag:bench", "image": ref, "max_unavailable": "100%",
                                                   "multicast": way == "multicast"})
                    http = _served(client) - before
                    sessions = job["stats"].get("multicast", [])
                    sent = sum(s["sent_bytes"] for s in sessions)
                    runs.append({
                        "nodes": count, "way": way, "wall_s": round(job["ended_at"] - job["created_at"], 1),
                        "egress_bytes": http + sent, "http_bytes": http, "multicast_sent_bytes": sent,
                        "egress_vs_one_image": round((http + sent) / size, 2),
                        "retransmitted_bytes": sum(s["retransmitted_bytes"] for s in sessions),
                        "session_sending_s": sum(s.get("sending_s") or 0 for s in sessions),
                        "agent_image_phase_s": _image_phase(client, names[:count]),
                    })
        return {"image_bytes": size, "runs": runs}
    finally:
        lab.down()
