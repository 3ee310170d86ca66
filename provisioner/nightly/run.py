"""`provisioner nightly POOL`: a client of the daemon's API, like the rest of the CLI.
The daemon reimages (a job) and checks (over SSH, or a playbook); this gathers each
machine's story (phases, inspection, checks, console tail on failure) into a report."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from ..display.jobs import show_plan, watch
from ..display.output import print_json, table
from ..client import Client
from ..errors import Conflict, InvalidInput
from ..statuses import MemberStatus
from .report import Machine, write_report

CONSOLE_TAIL = 8 * 1024
LAST_NIGHTS = 7  # shown per machine in the report


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def phases(events: list[dict[str, Any]], start: float, end: float) -> list[tuple[str, float]]:
    """Time spent in each step of the node's reimage, in order, from its own events."""
    marks = [(e["ts"], e.get("step") or e.get("to_state") or e["event"]) for e in events if start <= e["ts"] <= end]
    out: list[tuple[str, float]] = []
    for (ts, name), (nxt, _) in zip(marks, marks[1:] + [(end, "")]):
        if out and out[-1][0] == name:
            out[-1] = (name, out[-1][1] + nxt - ts)
        else:
            out.append((name, nxt - ts))
    return [(n, round(s, 1)) for n, s in out]


def inspection_summary(node: dict[str, Any]) -> dict[str, Any]:
    """What the report shows of a machine's inspection: the node view's hardware summary."""
    hw = node.get("hardware") or {}
    return {"cpus": hw.get("cpus"), "memory_mib": hw.get("memory_mib"), "disks": ", ".join(hw.get("disks") or []),
            "serial": hw.get("serial"), "mac": node.get("mac")}


def remember(client: Client, pool: str, job: int | None, started: float, ended: float,
             machines: dict[str, Machine]) -> None:
    """Record tonight with the daemon, and read each machine's last nights back (with
    what stands out in them) for the report."""
    client.post("/v1/nights", {"pool": pool, "job": job, "started_at": started, "ended_at": ended, "machines": [
        {"name": m.name, "rack": m.rack, "passed": not m.failed, "reason": m.reason() if m.failed else None,
         "phases": [list(p) for p in m.phases]} for m in machines.values()]})
    names = ",".join(_q(n) for n in machines)
    history = client.get(f"/v1/nights/machines?nodes={names}&limit={LAST_NIGHTS}")["machines"]
    for name, m in machines.items():
        m.history = history.get(name, {}).get("nights", [])
        m.flags = history.get(name, {}).get("flags", [])


def cmd_nightly(client: Client, args: argparse.Namespace) -> int:
    long_client = Client(client.api, client.token, timeout=1900)  # checks may run a playbook
    playbook = str(Path(args.checks).resolve()) if args.checks else None
    if playbook and not Path(playbook).is_file():
        raise InvalidInput(f"no playbook at {args.checks}")
    report_dir = Path(args.report)
    started = time.time()
    body = {"target": args.pool, "image": args.image, "max_unavailable": args.max_unavailable,
            "max_failures": "100%"}  # every machine gets its night, whatever its neighbours do
    plan = client.post("/v1/reimage", {**body, "dry_run": True})
    names = [n for batch in plan["batches"] for n in batch]
    if not args.json:
        show_plan(plan)
    machines: dict[str, Machine] = {n: Machine(n) for n in names}
    try:
        job = client.post("/v1/reimage", body)
    except Conflict as exc:  # e.g. a machine stuck in a state a reimage cannot start from
        for m in machines.values():
            m.reimage_error = f"not reimaged: {exc}"
        job = None
    if job is not None:
        if not args.json:
            print(f"job {job['id']}: reimaging {len(names)} machines\n", flush=True)
        job = watch(client, job, show=not args.json)
        for member in job["nodes"]:
            m = machines[member["name"]]
            m.rack = member["rack"]
            m.reimage_seconds = round(member["ended_at"] - member["started_at"], 1) \
                if member.get("ended_at") and member.get("started_at") else None
            if member["status"] != MemberStatus.DONE:
                m.reimage_error = member.get("message") or member.get("last_error") or member["status"]
            if member.get("started_at"):
                events = client.get(f"/v1/nodes/{_q(m.name)}/events")["events"]
                m.phases = phases(events, member["started_at"], member.get("ended_at") or time.time())
    for m in machines.values():
        node = client.get(f"/v1/nodes/{_q(m.name)}")
        m.rack = node["rack"]
        m.inspection = inspection_summary(node)
        m.image = node.get("image")  # NAME:VERSION
    back = [m.name for m in machines.values() if m.reimage_error is None]
    if back:
        if not args.json:
            print(f"checking {len(back)} hosts" + (f" with {args.checks}" if playbook else "") + "\n", flush=True)
        check_start = time.monotonic()
        doc = long_client.post("/v1/checks", {"nodes": back, **({"playbook": playbook} if playbook else {})})
        took = time.monotonic() - check_start
        for name, checks in doc["results"].items():
            machines[name].checks = checks
            machines[name].phases.append(("checks", round(took, 1)))
    for m in machines.values():
        if m.failed:
            try:
                m.console = client.get(f"/v1/nodes/{_q(m.name)}/console?bytes={CONSOLE_TAIL}")["text"]
            except Exception as exc:  # noqa: BLE001 - the report says why there is none
                m.console = f"(no console log: {exc})"
    ended = time.time()
    remember(client, args.pool, job["id"] if job else None, started, ended, machines)
    files = write_report(report_dir, args.pool, plan, list(machines.values()), started, ended,
                         job["id"] if job else None)
    failed = [m for m in machines.values() if m.failed]
    if args.json:
        print_json({"pool": args.pool, "job": job["id"] if job else None, "failed": [m.name for m in failed],
                    "machines": [m.doc() for m in machines.values()], "report": {k: str(v) for k, v in files.items()}})
    else:
        print()
        table(["machine", "rack", "reimage", "checks", "result"],
              [[m.name, m.rack, "done" if m.reimage_error is None else "failed",
                f"{sum(c['ok'] for c in m.checks)}/{len(m.checks)}" if m.checks else "-",
                "FAIL: " + m.reason() if m.failed else "pass"] for m in machines.values()])
        for m in machines.values():
            for flag in m.flags:
                print(f"{m.name}: {flag}")
        print(f"\n{len(machines) - len(failed)} passed, {len(failed)} failed")
        print(f"report: {files['html']}\njunit:  {files['junit']}")
    sys.stdout.flush()
    return 1 if failed or not machines else 0
