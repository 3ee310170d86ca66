"""A reimage or rollback job for people: its plan, its nodes' progress as it runs, and
the table it ends with."""

from __future__ import annotations

import sys
import time
from typing import Any

from ..client import Client
from ..statuses import JobStatus, MemberStatus
from .live import LiveView, Row, fraction
from .output import print_json, progress_text, size_text, table, tally


def job_rows(job: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for m in job["nodes"]:
        detail = m.get("message") or ""
        if m["status"] == MemberStatus.RUNNING and m.get("step"):
            detail = m["step"]
        if m["status"] == MemberStatus.FAILED:
            detail = m.get("message") or m.get("last_error") or ""
        took = f"{m['ended_at'] - m['started_at']:.0f}s" if m.get("ended_at") and m.get("started_at") else ""
        rows.append([m["batch"] + 1, m["name"], m["rack"], m["status"], detail,
                     "" if m.get("bytes") is None else size_text(m["bytes"]), took])
    return rows


def transfer_lines(job: dict[str, Any]) -> list[str]:
    """What the job noted (multicast or HTTP, per batch) and its multicast sessions' reports."""
    stats = job.get("stats") or {}
    lines = [f"  {note}" for note in stats.get("notes", [])]
    for s in stats.get("multicast", []) + job.get("multicast_sessions", []):
        image = s.get("image_bytes") or 0
        ratio = f" ({s['sent_bytes'] / image:.2f}x the image)" if image else ""
        state = "ended early" if s["state"] == "done" and not s.get("complete", True) else s["state"]
        lines.append(f"  batch {s['batch']} multicast {s['group']}:{s['portbase']}: {state}, "
                     f"{s['joined']} of {s['expected']} joined, {s['dropped']} dropped; sent "
                     f"{size_text(s['sent_bytes'])}{ratio}, {size_text(s['retransmitted_bytes'])} of it "
                     f"retransmitted; HTTP repair {size_text(s.get('http_bytes', 0))}"
                     + (f"; {s['error']}" if s.get("error") else "")
                     + (" (open)" if s in job.get("multicast_sessions", []) else ""))
    return lines


def show_plan(plan: dict[str, Any]) -> None:
    image = plan.get("image")
    print(f"{plan['kind']} {plan['target']}" + (f" to {image['ref']} ({image['sha256'][:16]})" if image else
                                               (" to the previous image" if plan.get("to_previous") else
                                                " to each node's current image")))
    print(f"  {sum(len(b) for b in plan['batches'])} nodes in {len(plan['batches'])} batches "
          f"(upgrade domains), at most {plan['max_unavailable']} down at once, {plan['max_parallel']} in "
          f"parallel, stop after a batch with more than {plan['max_failures']} failures")
    for i, batch in enumerate(plan["batches"], start=1):
        print(f"  batch {i}: {', '.join(batch)}")
        for g in plan.get("guests") or []:
            if g["batch"] == i - 1:
                where = f"{g['from']} -> {g['to']}" if g["action"] == "move" else \
                    f"on {g['from']}, made again there once it is back"
                print(f"    guest {g['guest']} ({g['role']}): {g['action']} {where}" +
                      (f" ({g['why']})" if g["action"] != "move" and g["why"] else ""))


def follow(client: Client, job: dict[str, Any], as_json: bool) -> int:
    """Print each node's progress as it changes until the job ends; exit 0 only if all came back."""
    job = watch(client, job, not as_json)
    if as_json:
        print_json(job)
    else:
        print()
        table(["batch", "node", "rack", "result", "detail", "transferred", "took"], job_rows(job))
        for line in transfer_lines(job):
            print(line)
        if job.get("guests"):
            print()
            table(["batch", "guest", "action", "host", "result", "detail"],
                  [[g["batch"] + 1, g["name"], g["action"], g["host"], g["status"], g.get("message") or ""]
                   for g in job["guests"]])
        print(f"\njob {job['id']} {job['status']}: {tally(job['nodes'])}"
              + (f"; guests: {tally(job['guests'])}" if job.get("guests") else ""))
    return 0 if job["status"] == JobStatus.DONE else 1


def member_rows(job: dict[str, Any]) -> list[Row]:
    """A job's guests and nodes in a live view."""
    rows = []
    for g in job.get("guests") or []:  # moved or stopped before their hosts go, or back after
        message = g.get("message") or ""
        rows.append(Row("guest " + g["name"], (f"guest {g['name']}", g["host"], g["status"], f"{g['action']} {message}"),
                        f"guest {g['name']:<10} {g['status']:<8} {g['action']} {g['host']}: {message}"))
    for m in job["nodes"]:
        if m["status"] == MemberStatus.RUNNING:
            what = m.get("step") or m.get("state") or ""  # between its last step and the job's note
        else:
            what = m.get("message") or (m.get("last_error") if m["status"] == MemberStatus.FAILED else "") or ""
        if m["status"] == MemberStatus.RUNNING and m.get("progress"):
            what += ": " + progress_text(m["progress"])
        rows.append(Row(m["name"], (m["name"], m["rack"], m["status"], what),
                        f"{m['name']:<16} {m['status']:<8} {what}",
                        fraction(m.get("progress")) if m["status"] == MemberStatus.RUNNING else None))
    return rows


def watch(client: Client, job: dict[str, Any], show: bool) -> dict[str, Any]:
    """Poll a reimage or rollback job until it ends (showing its members live if `show`)."""
    started = time.monotonic()
    with LiveView(("member", "where", "status", "detail"), out=sys.stdout) as view:
        while True:
            if show:
                view.update(member_rows(job), time.monotonic() - started)
            if job["status"] != JobStatus.RUNNING:
                return job
            time.sleep(1.0)
            job = client.get(f"/v1/jobs/{job['id']}")
