"""CLI commands for images, reimage, rollback and jobs."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from ..display.live import can_redraw
from ..client import Client
from ..display.jobs import follow, job_rows, show_plan, transfer_lines
from ..display.output import print_json, size_text as _size, table, timestamp
from ..errors import InvalidInput
from ..models import validate_name
from ..statuses import GUEST_JOBS, JobKind
from .fetch import fetch


class Progress:
    """One line with a bar, rewritten in place on a terminal; a line every 10% otherwise."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.label = label
        self.quiet = quiet
        self.tty = can_redraw(sys.stderr)
        self.last = -1
        self.started = time.monotonic()

    def __call__(self, done: int, total: int | None) -> None:
        if self.quiet:
            return
        pct = int(done * 100 / total) if total else -1
        if not self.tty and (pct // 10 == self.last // 10 and done != total):
            return
        self.last = pct
        rate = done / max(time.monotonic() - self.started, 1e-6)
        bar = ""
        if self.tty and total:
            filled = min(24, done * 24 // total)
            bar = "[" + "#" * filled + "." * (24 - filled) + "] "
        text = f"{self.label}: {bar}{_size(done)}" + (f" of {_size(total)} ({pct}%)" if total else "") + \
               f", {_size(int(rate))}/s"
        sys.stderr.write(("\r" + text + "\033[K") if self.tty else text + "\n")
        sys.stderr.flush()

    def end(self) -> None:
        if not self.quiet and self.tty:
            sys.stderr.write("\n")


def cmd_image(client: Client, args: argparse.Namespace) -> int:
    action = args.image_command
    if action == "import":
        validate_name(args.name, "image name")
        source = args.source
        if source.startswith(("http://", "https://")):
            bar = Progress("downloading", args.json)
            path = fetch(source, bar)
            bar.end()
        else:
            path = Path(source)
            if not path.is_file():
                raise InvalidInput(f"{source}: no such file")
        query = {"name": args.name, "filename": Path(urllib.parse.urlsplit(source).path).name or path.name,
                 "source": source}
        if args.version:
            query["version"] = args.version
        if args.format:
            query["format"] = args.format
        bar = Progress("uploading", args.json)
        doc = client.upload("/v1/images?" + urllib.parse.urlencode(query), path, bar)
        bar.end()
        if args.json:
            print_json(doc)
        else:
            print(f"imported {doc['ref']}: {doc['format']}, {_size(doc['size'])} "
                  f"({_size(doc['virtual_size'])} virtual), sha256 {doc['sha256']}"
                  + ("" if doc.get("stored_new_bytes") else " (same bytes as an image already stored)"))
        return 0
    if action == "list":
        docs = client.get("/v1/images")["images"]
        if args.json:
            print_json(docs)
            return 0
        table(["name", "version", "format", "size", "virtual", "sha256", "imported", "used by"],
              [[d["name"], d["version"], d["format"], _size(d["size"]), _size(d["virtual_size"]),
                d["sha256"][:16], timestamp(d["created_at"]), ", ".join(d["used_by"])] for d in docs])
        return 0
    ref = urllib.parse.quote(args.ref, safe="")
    if action == "show":
        doc = client.get(f"/v1/images/{ref}")
        if args.json:
            print_json(doc)
            return 0
        for key in ("ref", "format", "sha256", "source"):
            print(f"{key + ':':10} {doc[key]}")
        print(f"{'size:':10} {_size(doc['size'])} ({_size(doc['virtual_size'])} virtual)")
        print(f"{'imported:':10} {timestamp(doc['created_at'])}")
        print(f"{'versions:':10} {', '.join(doc['versions'])}")
        print(f"{'used by:':10} {', '.join(doc['used_by']) or '-'}")
        return 0
    doc = client.delete(f"/v1/images/{ref}")
    print_json(doc) if args.json else print(f"removed {doc['removed']}")
    return 0


def _run_job(client: Client, args: argparse.Namespace, path: str, body: dict[str, Any]) -> int:
    plan = client.post(path, {**body, "dry_run": True})
    if not args.json:
        show_plan(plan)
    if args.dry_run:
        if args.json:
            print_json(plan)
        return 0
    job = client.post(path, body)
    if not args.json:
        print(f"job {job['id']} started ('provisioner reimage --abort' stops it between nodes)\n")
    if args.no_wait:
        print_json(job) if args.json else None
        return 0
    return follow(client, job, args.json)


def cmd_reimage(client: Client, args: argparse.Namespace) -> int:
    if args.abort:
        job = client.post("/v1/jobs/abort", {})
        print_json(job) if args.json else print(f"job {job['id']}: abort requested; nodes already being "
                                                "reimaged finish, no new node starts")
        return 0
    if not args.target:
        raise InvalidInput("say what to reimage: a node, a rack (rack-3) or all")
    body = {"target": args.target, "image": args.image, "max_parallel": args.max_parallel,
            "max_unavailable": args.max_unavailable, "max_failures": args.max_failures,
            "multicast": not args.no_multicast, "force": args.force}
    return _run_job(client, args, "/v1/reimage", body)


def cmd_rollback(client: Client, args: argparse.Namespace) -> int:
    body = {"target": args.target, "to_previous": args.to_previous, "max_parallel": args.max_parallel,
            "max_unavailable": args.max_unavailable, "force": args.force}
    return _run_job(client, args, "/v1/rollback", body)


def cmd_job(client: Client, args: argparse.Namespace) -> int:
    if args.job is None:
        jobs = client.get("/v1/jobs")["jobs"]
        if args.json:
            print_json(jobs)
            return 0
        table(["id", "kind", "target", "status", "nodes/guests", "started", "ended"],
              [[j["id"], j["kind"], j["target"], j["status"],
                sum(j["node_counts"].values()) or sum(j["guest_counts"].values()),
                timestamp(j["created_at"]),
                timestamp(j["ended_at"])] for j in jobs])
        return 0
    job = client.get(f"/v1/jobs/{args.job}")
    if args.json:
        print_json(job)
        return 0
    print(f"job {job['id']}: {job['kind']} {job['target']}, {job['status']}")
    if job["kind"] in GUEST_JOBS:
        table(["batch", "guest", "action", "host", "result", "detail", "transferred", "took"],
              [[g["batch"], g["name"], g["action"], g["host"], g["status"], g.get("message") or "",
                "" if g.get("bytes") is None else _size(g["bytes"]),
                f"{g['ended_at'] - g['started_at']:.0f}s" if g.get("ended_at") and g.get("started_at") else ""]
               for g in job["guests"]])
        return 0
    table(["batch", "node", "rack", "result", "detail", "transferred", "took"], job_rows(job))
    lines = transfer_lines(job)
    if lines:
        print("\nimage transfer:")
        print("\n".join(lines))
    return 0


def cmd_controllers(client: Client, args: argparse.Namespace) -> int:
    doc = client.get("/v1/controllers")
    if args.json:
        print_json(doc)
        return 0
    now = time.time()
    table(["controller", "status", "racks", "wants", "jobs", "lease", "address"],
          [[c["name"] + (" (this one)" if c["name"] == doc["this"] else ""),
            "alive" if c["alive"] else "lost", ", ".join(c["racks"]) or "-",
            "any" if c["wants"] is None else ", ".join(c["wants"]),
            ", ".join(str(j) for j in c["jobs"]) or "-",
            f"{c['lease_until'] - now:+.0f}s", c["address"]] for c in doc["controllers"]])
    return 0
