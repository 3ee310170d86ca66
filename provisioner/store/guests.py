"""Rows of guests, of hypervisor hosts registered by hand (hosts the provisioner did not
deploy), and of deploy jobs' guests. A deploy job records each guest's whole spec, so a
restarted daemon carries it on without the roles file."""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import Conflict, NotFound
from ..statuses import GUEST_JOBS, GuestState, JobKind, JobStatus, MemberStatus, PlanAction
from .base import SqlBase

def insert_guest_entries(db: Any, job_id: int, entries: list[dict[str, Any]], now: float) -> None:
    """A job's guest entries, and each guest's row marked as the job's (a new guest's made)."""
    for e in entries:
        db.execute("INSERT INTO job_guests (job_id, guest, action, batch, host, spec, status) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (job_id, e["guest"], e["action"], e["batch"], e["host"], json.dumps(e["spec"]),
                    MemberStatus.PENDING))
        if e["action"] == PlanAction.REMOVE:
            db.execute("UPDATE guests SET state = ?, job_id = ?, updated_at = ? WHERE name = ?",
                       (GuestState.REMOVING, job_id, now, e["guest"]))
            continue
        g = e["spec"]["guest"]
        net = e["spec"].get("network") or {}
        db.execute(
            "INSERT INTO guests (name, role, idx, host, cores, memory_mib, upgrade_domain, state, job_id, "
            "address, mac, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET state = excluded.state, job_id = excluded.job_id, "
            "address = COALESCE(guests.address, excluded.address), "
            "mac = COALESCE(guests.mac, excluded.mac), updated_at = excluded.updated_at",
            (g["name"], g["role"], g["index"], g["host"], json.dumps(g["cores"]), g["memory_mib"],
             g["upgrade_domain"], GuestState.PENDING, job_id, net.get("address"), net.get("mac"), now, now))


def _guest(row: Any) -> dict[str, Any]:
    doc = dict(row)
    doc["index"] = doc.pop("idx")
    doc["cores"] = json.loads(doc["cores"])
    return doc


class GuestRows(SqlBase):
    # -- registered hosts -----------------------------------------------------
    def add_host(self, *, name: str, address: str, port: int, rack: str, host_key: str, cores: int,
                 memory_mib: int, bridge: str = "") -> dict[str, Any]:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM hosts WHERE name = ?", (name,)).fetchone() or \
                    db.execute("SELECT 1 FROM nodes WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"a host or node named {name} already exists")
            db.execute("INSERT INTO hosts (name, address, port, rack, host_key, cores, memory_mib, bridge, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (name, address, port, rack, host_key, cores, memory_mib, bridge, time.time()))
        return self.registered_host(name)

    def registered_hosts(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM hosts ORDER BY name")]

    def registered_host(self, name: str) -> dict[str, Any]:
        rows = self._query("SELECT * FROM hosts WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"no registered host {name!r}")
        return dict(rows[0])

    def remove_host(self, name: str) -> None:
        with self._tx() as db:
            used = db.execute("SELECT name FROM guests WHERE host = ? ORDER BY name", (name,)).fetchall()
            if used:
                raise Conflict(f"host {name} still runs guests ({', '.join(r[0] for r in used)}): "
                               "remove them from the roles file and deploy first")
            if db.execute("DELETE FROM hosts WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"no registered host {name!r}")

    # -- images known complete on a host (an upload cut short is not one) ---------
    def host_images(self, host: str) -> set[str]:
        return {r[0] for r in self._query("SELECT sha256 FROM host_images WHERE host = ?", (host,))}

    def set_host_image(self, host: str, sha256: str, present: bool) -> None:
        with self._tx() as db:
            if present:
                db.execute("INSERT INTO host_images (host, sha256, created_at) VALUES (?, ?, ?) "
                           "ON CONFLICT DO NOTHING",
                           (host, sha256, time.time()))
            else:
                db.execute("DELETE FROM host_images WHERE host = ? AND sha256 = ?", (host, sha256))

    def forget_host_images(self, host: str) -> None:
        """The host's disk is being laid down again: none of its images survive."""
        with self._tx() as db:
            db.execute("DELETE FROM host_images WHERE host = ?", (host,))

    # -- guests ---------------------------------------------------------------
    def guests(self, host: str | None = None, role: str | None = None) -> list[dict[str, Any]]:
        where, args = [], []
        for column, value in (("host", host), ("role", role)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT * FROM guests" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY role, idx"
        return [_guest(r) for r in self._query(sql, tuple(args))]

    def guest(self, name: str) -> dict[str, Any]:
        rows = self._query("SELECT * FROM guests WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"no guest {name!r}: see 'provisioner guests'")
        return _guest(rows[0])

    def set_guest(self, name: str, **fields: Any) -> None:
        if "cores" in fields:
            fields["cores"] = json.dumps(list(fields["cores"]))
        if "index" in fields:
            fields["idx"] = fields.pop("index")
        fields["updated_at"] = time.time()
        names = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE guests SET {names} WHERE name = ?", (*fields.values(), name))

    def delete_guest(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM guests WHERE name = ?", (name,))

    # -- role endpoints ---------------------------------------------------------
    def endpoints(self) -> list[dict[str, Any]]:
        out = []
        for r in self._query("SELECT name, role, vip, ports FROM endpoints ORDER BY name"):
            doc = dict(r)
            doc["ports"] = json.loads(doc["ports"])
            out.append(doc)
        return out

    def replace_endpoints(self, slots: list[dict[str, Any]]) -> None:
        """The endpoints table as a deploy's plan says (name, role, vip, ports)."""
        now = time.time()
        with self._tx() as db:
            keep = [s["name"] for s in slots]
            db.execute(f"DELETE FROM endpoints WHERE name NOT IN ({','.join('?' * len(keep))})", tuple(keep))
            for s in slots:
                db.execute("INSERT INTO endpoints (name, role, vip, ports, created_at, updated_at) "
                           "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET role = excluded.role, "
                           "vip = excluded.vip, ports = excluded.ports, updated_at = excluded.updated_at",
                           (s["name"], s["role"], s["vip"], json.dumps(s["ports"]), now, now))

    def swap_endpoints(self, a: str, b: str) -> None:
        """The two roles' endpoints exchange the roles they serve (one transaction)."""
        with self._tx() as db:
            rows = {r[1]: (r[0], r[2]) for r in db.execute("SELECT name, role, ports FROM endpoints "
                                                          "WHERE role IN (?, ?)", (a, b))}
            if set(rows) != {a, b}:
                raise NotFound(f"roles {a} and {b} do not both have an endpoint")
            (name_a, ports_a), (name_b, ports_b) = rows[a], rows[b]
            db.execute("UPDATE endpoints SET role = '' WHERE name = ?", (name_a,))  # role is UNIQUE
            db.execute("UPDATE endpoints SET role = ?, ports = ?, updated_at = ? WHERE name = ?",
                       (a, ports_a, time.time(), name_b))
            db.execute("UPDATE endpoints SET role = ?, ports = ?, updated_at = ? WHERE name = ?",
                       (b, ports_b, time.time(), name_a))

    # -- deploy jobs ----------------------------------------------------------
    def create_deploy_job(self, source: str, options: dict[str, Any], entries: list[dict[str, Any]],
                          kind: JobKind = JobKind.DEPLOY) -> int:
        """A deploy (or heal) job over guest entries (guest, action, batch, host, spec); each
        guest's row is written (or marked) in the same transaction, so the plan is all or
        nothing. One such job at a time."""
        now = time.time()
        with self._tx() as db:
            marks = ",".join("?" for _ in GUEST_JOBS)
            running = db.execute(f"SELECT id, kind FROM jobs WHERE kind IN ({marks}) AND status = ?",
                                 (*GUEST_JOBS, JobStatus.RUNNING)).fetchone()
            if running is not None:
                raise Conflict(f"{running[1]} job {running[0]} is still running: wait for it "
                               "('provisioner job') or stop it ('provisioner reimage --abort')")
            cur = db.execute("INSERT INTO jobs (kind, target, options, status, created_at, updated_at, owner, "
                             "lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                             (kind, source, json.dumps(options, sort_keys=True), JobStatus.RUNNING, now, now,
                              self.controller, now + self.lease_seconds))
            job_id = int(cur.fetchone()[0])
            insert_guest_entries(db, job_id, entries, now)
        return job_id

    # -- the roles file last deployed -----------------------------------------------
    def save_deployment(self, source: str, body: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO deployments (source, body, created_at) VALUES (?, ?, ?)",
                       (source, json.dumps(body, sort_keys=True), time.time()))
            db.execute("DELETE FROM deployments WHERE id NOT IN (SELECT id FROM deployments ORDER BY id DESC "
                       "LIMIT 10)")

    def last_deployment(self) -> dict[str, Any] | None:
        rows = self._query("SELECT body FROM deployments ORDER BY id DESC LIMIT 1")
        return json.loads(rows[0][0]) if rows else None

    def job_guests(self, job_id: int) -> list[dict[str, Any]]:
        rows = self._query("SELECT guest, action, batch, host, spec, status, step, message, bytes, started_at, "
                           "ended_at "
                           "FROM job_guests WHERE job_id = ? ORDER BY batch, guest", (job_id,))
        out = []
        for r in rows:
            doc = dict(r)
            doc["spec"] = json.loads(doc["spec"])
            out.append(doc)
        return out
