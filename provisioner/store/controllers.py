"""Rows of the fleet's controllers: each one's row and lease, the racks each serves (a
lease per rack), and the controller that runs each job (a lease per job). No controller
talks to another to agree on anything: every claim is a row, taken in one statement or one
transaction, and lost when its lease runs out."""

from __future__ import annotations

import json
import time
from typing import Any

from ..statuses import JobKind, JobStatus
from .base import SqlBase


class ControllerRows(SqlBase):
    def register_controller(self, name: str, address: str, wants: tuple[str, ...] | None) -> None:
        """This controller starts (or restarts): its row, fresh."""
        now = time.time()
        with self._tx() as db:
            db.execute("INSERT INTO controllers (name, address, wants, started_at, seen_at, lease_until) "
                       "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET address = excluded.address, "
                       "wants = excluded.wants, started_at = excluded.started_at, seen_at = excluded.seen_at, "
                       "lease_until = excluded.lease_until",
                       (name, address, _wants_text(wants), now, now, now + self.lease_seconds))

    def retire_controller(self, name: str) -> None:
        """A clean stop: its racks and jobs are free at once, not after the lease."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE controllers SET lease_until = ? WHERE name = ?", (now, name))
            db.execute("DELETE FROM rack_leases WHERE controller = ?", (name,))
            db.execute("UPDATE jobs SET lease_until = ? WHERE owner = ? AND status = ?",
                       (now, name, JobStatus.RUNNING))

    def claim_racks(self, name: str, wants: tuple[str, ...] | None) -> tuple[set[str], set[str]]:
        """Renew this controller's row and its racks' leases, take the racks it wants (or
        any, when it serves all) that are free or whose lease ran out, and give back a rack
        it does not want once a live controller that wants it exists. Racks nobody alive
        wants go to whoever comes first. (The racks it holds now, and every rack of the fleet.)"""
        now = time.time()
        until = now + self.lease_seconds
        with self._tx() as db:
            db.execute("UPDATE controllers SET seen_at = ?, lease_until = ? WHERE name = ?", (now, until, name))
            alive = {r["name"]: _wants(r["wants"]) for r in
                     db.execute("SELECT name, wants FROM controllers WHERE lease_until > ?", (now,)).fetchall()}
            holders = {r["rack"]: (r["controller"], r["lease_until"]) for r in
                       db.execute("SELECT rack, controller, lease_until FROM rack_leases").fetchall()}
            racks = [r[0] for r in db.execute("SELECT DISTINCT rack FROM nodes").fetchall()]
            held: set[str] = set()
            for rack in racks:
                holder = holders.get(rack)
                i_want = wants is None or rack in wants
                wanted_elsewhere = any(w is not None and rack in w for c, w in alive.items() if c != name)
                if holder is not None and holder[0] == name:
                    if not i_want and wanted_elsewhere:
                        db.execute("DELETE FROM rack_leases WHERE rack = ? AND controller = ?", (rack, name))
                        continue
                    db.execute("UPDATE rack_leases SET lease_until = ? WHERE rack = ?", (until, rack))
                    held.add(rack)
                elif holder is None or holder[1] < now:
                    if i_want or not wanted_elsewhere:
                        db.execute("INSERT INTO rack_leases (rack, controller, lease_until) VALUES (?, ?, ?) "
                                   "ON CONFLICT (rack) DO UPDATE SET controller = excluded.controller, "
                                   "lease_until = excluded.lease_until", (rack, name, until))
                        held.add(rack)
        return held, set(racks)

    def claim_jobs(self, name: str, running_here: set[int], own: bool = False) -> list[tuple[int, JobKind]]:
        """Running jobs this controller takes to run: ones no live controller holds (its
        lease ran out), and with `own` (only as it starts, before it creates any job) its
        own that no thread of this process runs (it restarted). Later, a job this process
        has just created but not yet started is its own with a fresh lease: not taken twice.
        One statement; on PostgreSQL, rows another controller is claiming are skipped."""
        now = time.time()
        skip = self._db.lock_rows
        mine = " OR owner = ?" if own else ""
        with self._lock:
            rows = self._db.execute(
                "UPDATE jobs SET owner = ?, lease_until = ? WHERE id IN (SELECT id FROM jobs WHERE status = ? AND "
                f"(owner IS NULL OR lease_until IS NULL OR lease_until < ?{mine}){skip}) RETURNING id, kind",
                (name, now + self.lease_seconds, JobStatus.RUNNING, now, *((name,) if own else ()))).fetchall()
        return [(int(r[0]), JobKind(r[1])) for r in rows if int(r[0]) not in running_here]

    def renew_jobs(self, name: str, job_ids: set[int]) -> None:
        if not job_ids:
            return
        marks = ",".join("?" for _ in job_ids)
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET lease_until = ? WHERE owner = ? AND id IN ({marks})",
                       (time.time() + self.lease_seconds, name, *sorted(job_ids)))

    def job_owner(self, job_id: int) -> str | None:
        rows = self._query("SELECT owner FROM jobs WHERE id = ?", (job_id,))
        return rows[0][0] if rows else None

    def controllers(self) -> list[dict[str, Any]]:
        """Every controller with its racks, the jobs it runs, and whether its lease holds."""
        now = time.time()
        out = []
        for row in self._query("SELECT name, address, wants, started_at, seen_at, lease_until FROM controllers "
                               "ORDER BY name"):
            doc = dict(row)
            doc["wants"] = _wants(doc["wants"])
            doc["alive"] = doc["lease_until"] > now
            doc["racks"] = [r[0] for r in self._query(
                "SELECT rack FROM rack_leases WHERE controller = ? AND lease_until > ? ORDER BY rack", (doc["name"], now))]
            doc["jobs"] = [int(r[0]) for r in self._query(
                "SELECT id FROM jobs WHERE owner = ? AND status = ? ORDER BY id", (doc["name"], JobStatus.RUNNING))]
            out.append(doc)
        return out

    def rack_holder(self, rack: str) -> str | None:
        rows = self._query("SELECT controller FROM rack_leases WHERE rack = ? AND lease_until > ?", (rack, time.time()))
        return rows[0][0] if rows else None


def _wants_text(wants: tuple[str, ...] | None) -> str:
    return "" if wants is None else json.dumps(list(wants))


def _wants(text: str) -> tuple[str, ...] | None:
    return None if not text else tuple(json.loads(text))
