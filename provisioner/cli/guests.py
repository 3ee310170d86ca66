"""CLI commands for guests (deploy, guests, guest) and the hosts they run on (host)."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from ..client import Client
from ..display.live import LiveView, Row
from ..display.output import print_json, size_text, table, tally, timestamp
from ..errors import InvalidInput
from ..guests.roles import template_names
from ..statuses import GuestState, JobStatus, PlanAction


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def show_deploy_plan(doc: dict[str, Any]) -> None:
    hosts = ", ".join(f"{h['name']} ({h['rack']}, {h['cores']} cores, {h['memory_mib']} MiB)" for h in doc["hosts"])
    print(f"hosts: {hosts or '-'}")
    rows = [[g["action"], g["name"], g["role"], g["host"] + (f" (from {g['old_host']})" if g.get("old_host") and
                                                            g["old_host"] != g["host"] else ""),
             ",".join(map(str, g["cores"])), f"{g['memory_mib']} MiB", g["upgrade_domain"], g["base"] or "",
             g["app"] or "", g.get("address") or ""] for g in doc["guests"]]
    table(["action", "guest", "role", "host", "cores", "memory", "ud", "base", "app", "address"], rows)
    if doc.get("endpoints_changed"):
        print("endpoints: " + (", ".join(f"{e['name']} {e['vip']}:{','.join(str(p['port']) for p in e['ports'])} "
                                         f"({e['role']})" for e in doc["endpoints"]) or "none"))
    counts = doc["counts"]
    changes = (PlanAction.ADD, PlanAction.REMOVE, PlanAction.ROLL, PlanAction.REPAIR)
    moves = f", {counts[PlanAction.MOVE]} to move" if counts.get(PlanAction.MOVE) else ""
    print(", ".join(f"{counts.get(a, 0)} to {a}" for a in changes) + moves
          + f", {counts.get(PlanAction.KEEP, 0)} unchanged" + (" (dry run: nothing changed)" if doc["dry_run"] else ""))


def follow_deploy(client: Client, job_id: int, as_json: bool) -> int:
    started = time.monotonic()
    with LiveView(("guest", "host", "status", "detail"), out=sys.stdout) as view:
        while True:
            job = client.get(f"/v1/jobs/{job_id}")
            if not as_json:
                view.update([guest_row(g) for g in job["guests"]], time.monotonic() - started)
            if job["status"] != JobStatus.RUNNING:
                break
            time.sleep(1.0)
    if as_json:
        print_json(job)
    else:
        print(f"\ndeploy job {job['id']} {job['status']}: {tally(job['guests'])}")
    return 0 if job["status"] == JobStatus.DONE else 1


def guest_row(g: dict[str, Any]) -> Row:
    sent = f" ({size_text(g['bytes'])} of images sent)" if g.get("bytes") else ""
    message = g.get("message") or ""
    return Row(g["name"], (g["name"], g["host"], g["status"], message + sent),
               f"{g['name']:<16} {g['host']:<14} {g['status']:<8} {message}{sent}")


def cmd_deploy(client: Client, args: argparse.Namespace) -> int:
    path = Path(args.roles)
    try:
        text = path.read_text()
        templates = {name: (path.parent / name).read_text() for name in template_names(text)}
    except OSError as exc:
        raise InvalidInput(f"cannot read {exc.filename}: {exc.strerror}") from exc
    body = {"roles": text, "templates": templates, "source": str(path)}
    plan = client.post("/v1/deploy", {**body, "dry_run": True})
    if not args.json:
        show_deploy_plan(plan)
    if args.dry_run or not plan["changes"]:
        if args.json:
            print_json(plan)
        elif not args.dry_run:
            print("nothing to do: every guest is as the file says")
        return 0
    doc = client.post("/v1/deploy", body)
    if doc.get("job") is None:  # only endpoints changed, or someone else got there first
        print_json(doc) if args.json else print("endpoints updated; every guest is as the file says"
                                                if doc.get("endpoints_changed") else
                                                "nothing to do: every guest is as the file says")
        return 0
    if not args.json:
        print(f"\ndeploy job {doc['job']} started\n")
    if args.no_wait:
        print_json(doc) if args.json else None
        return 0
    return follow_deploy(client, int(doc["job"]), args.json)


def cmd_guests(client: Client, args: argparse.Namespace) -> int:
    query = {k: v for k, v in (("host", args.host), ("role", args.role)) if v}
    docs = client.get("/v1/guests" + ("?" + urllib.parse.urlencode(query) if query else ""))["guests"]
    if args.json:
        print_json(docs)
        return 0
    table(["guest", "role", "host", "state", "address", "cores", "memory", "ud", "ready in", "error, or why here"],
          [[g["name"], g["role"], g["host"], g["state"], g.get("address") or "", ",".join(map(str, g["cores"])),
            f"{g['memory_mib']} MiB", g["upgrade_domain"],
            "" if g.get("ready_seconds") is None else f"{g['ready_seconds']:.0f}s",
            g.get("last_error") or g.get("why") or ""] for g in docs])
    return 0


def cmd_guest(client: Client, args: argparse.Namespace) -> int:
    name = _q(args.name)
    action = args.guest_command
    if action == "show":
        doc = client.get(f"/v1/guests/{name}")
        if args.json:
            print_json(doc)
            return 0
        for key in ("name", "role", "index", "host", "why", "state", "base", "app", "upgrade_domain", "address", "mac",
                    "dns", "last_error"):
            print(f"{key + ':':16} {doc.get(key) if doc.get(key) is not None else '-'}")
        member = ", ".join(f"{m['endpoint']} {m['vip']}:{m['port']} {m['health']}" for m in doc.get("endpoints") or [])
        print(f"{'endpoints:':16} {member or '-'}")
        print(f"{'cores:':16} {','.join(map(str, doc['cores']))}")
        print(f"{'memory:':16} {doc['memory_mib']} MiB")
        print(f"{'ready in:':16} " + ("-" if doc.get("ready_seconds") is None else f"{doc['ready_seconds']}s"))
        print(f"{'updated:':16} {timestamp(doc['updated_at'])}")
        return 0
    if action == "console":
        doc = client.get(f"/v1/guests/{name}/console?bytes={args.bytes}")
        print_json(doc) if args.json else sys.stdout.write(doc["text"])
        return 0
    if action == "delete":
        doc = client.delete(f"/v1/guests/{name}")
        print_json(doc) if args.json else print(f"deleted {doc['deleted']} from {doc['host']} ({doc['note']})")
        return 0
    doc = client.post(f"/v1/guests/{name}/reset")
    if not args.json:
        print(f"{args.name}: overlay discarded, started again on its pristine base", flush=True)
    end = time.monotonic() + args.timeout
    while not args.no_wait:
        doc = client.get(f"/v1/guests/{name}")
        if doc["state"] != GuestState.RESETTING:
            break
        if time.monotonic() > end:
            raise InvalidInput(f"{args.name} is still starting after {args.timeout}s: "
                               f"'provisioner guest console {args.name}' shows why")
        time.sleep(1.0)
    if args.json:
        print_json(doc)
    elif doc.get("state") == GuestState.READY:
        print(f"{args.name}: ready after {doc['ready_seconds']:.0f}s")
    elif doc.get("state") == GuestState.FAILED:
        print(f"{args.name}: failed: {doc.get('last_error')}")
        return 1
    return 0


def cmd_host(client: Client, args: argparse.Namespace) -> int:
    action = args.host_command
    if action == "list":
        docs = client.get("/v1/hosts")["hosts"]
        if args.json:
            print_json(docs)
            return 0
        table(["host", "kind", "rack", "address", "cores", "memory", "state", "guests"],
              [[h["name"], h["kind"], h["rack"], h["address"], h["cores"], f"{h['memory_mib']} MiB",
                "available" if h["available"] else h["why"], ", ".join(h["guests"])] for h in docs])
        return 0
    if action == "ssh-key":
        print(client.get("/v1/ssh-key")["public_key"])
        return 0
    if action == "add":
        key = args.host_key
        if key and Path(key).is_file():
            key = Path(key).read_text().strip()
        doc = client.post("/v1/hosts", {"name": args.name, "address": args.address, "port": args.port,
                                        "rack": args.rack, "host_key": key or "", "bridge": args.bridge})
        print_json(doc) if args.json else print(
            f"host {doc['name']} registered: {doc['address']}, {doc['rack']}, {doc['cores']} cores, "
            f"{doc['memory_mib']} MiB")
        return 0
    if action == "remove":
        doc = client.delete(f"/v1/hosts/{_q(args.name)}")
        print_json(doc) if args.json else print(f"host {doc['removed']} forgotten")
        return 0
    doc = client.post(f"/v1/hosts/{_q(args.name)}/gc")
    if args.json:
        print_json(doc)
    else:
        print(f"{doc['host']}: removed {', '.join(doc['removed'])}" if doc["removed"] else
              f"{doc['host']}: no unused base image")
    return 0
