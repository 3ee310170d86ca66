"""Rows of jobs (reimage and rollback runs over many nodes) and their nodes. A job
claims its nodes: while it runs, no other command may touch them."""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import Conflict, NodeBusy, NotFound
from ..states import IN_PROGRESS
from ..statuses import GUEST_BUSY, MEMBER_ENDED, JobKind, JobStatus, MemberStatus, MemberStep
from .base import SqlBase
from .guests import insert_guest_entries

class JobRows(SqlBase):
    def create_job(self, kind: JobKind, target: str, options: dict[str, Any],
                   members: list[tuple[int, int]], guests: list[dict[str, Any]] | None = None) -> int:
        """Create a job over (node id, batch) pairs and claim the nodes, all or none;
        `guests`: the entries of the guests it moves or stops off those nodes first."""
        now = time.time()
        with self._tx() as db:
            busy_states = tuple(s.value for s in IN_PROGRESS)
            for node_id, _ in members:
                row = db.execute("SELECT name, state, job_id FROM nodes WHERE id = ?", (node_id,)).fetchone()
                if row is None:
                    raise NotFound(f"node {node_id} was deleted")
                if row["job_id"] is not None:
                    raise NodeBusy(node=row["name"], what=f"it is part of job {row['job_id']}")
                if row["state"] in busy_states:
                    raise NodeBusy(node=row["name"], what=f"it is {row['state']}")
            cur = db.execute("INSERT INTO jobs (kind, target, options, status, created_at, updated_at, owner, "
                             "lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                             (kind, target, json.dumps(options, sort_keys=True), JobStatus.RUNNING, now, now,
                              self.controller, now + self.lease_seconds))
            job_id = int(cur.fetchone()[0])
            for node_id, batch in members:
                db.execute("INSERT INTO job_nodes (job_id, node_id, batch, status) VALUES (?, ?, ?, ?)",
                           (job_id, node_id, batch, MemberStatus.PENDING))
                db.execute("UPDATE nodes SET job_id = ? WHERE id = ?", (job_id, node_id))
            if guests:
                busy = db.execute("SELECT name, job_id FROM guests WHERE job_id IS NOT NULL AND state IN "
                                  f"({','.join('?' for _ in GUEST_BUSY)})", GUEST_BUSY).fetchone()
                if busy is not None:
                    raise Conflict(f"guest {busy[0]} is being changed by job {busy[1]}: wait for it")
                insert_guest_entries(db, job_id, guests, now)
        return job_id

    def job(self, job_id: int) -> dict[str, Any]:
        rows = self._query("SELECT id, kind, target, options, status, abort, created_at, updated_at, ended_at, "
                           "stats FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise NotFound(f"no job {job_id}")
        doc = dict(rows[0])
        doc["options"] = json.loads(doc["options"])
        doc["abort"] = bool(doc["abort"])
        doc["stats"] = json.loads(doc["stats"] or "{}")
        members = self._query(
            "SELECT j.node_id, n.name, n.rack, n.state, n.step, n.last_error, j.batch, j.status, j.message, "
            "j.bytes, j.started_at, j.ended_at FROM job_nodes j JOIN nodes n ON n.id = j.node_id "
            "WHERE j.job_id = ? ORDER BY j.batch, n.name", (job_id,))
        doc["nodes"] = [dict(r) for r in members]
        guests = self._query(
            "SELECT guest AS name, action, batch, host, status, message, bytes, started_at, ended_at "
            "FROM job_guests WHERE job_id = ? ORDER BY batch, guest", (job_id,))
        doc["guests"] = [dict(r) for r in guests]
        return doc

    def jobs(self, running_only: bool = False, kind: tuple[JobKind, ...] = ()) -> list[dict[str, Any]]:
        where: list[str] = ["status = ?"] if running_only else []
        args: list[str] = [JobStatus.RUNNING] if running_only else []
        if kind:
            where.append(f"kind IN ({', '.join('?' * len(kind))})")
            args += kind
        sql = "SELECT id FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        rows = self._query(sql, tuple(args))
        return [self.job(int(r[0])) for r in rows]

    def job_summaries(self, limit: int = 100, before: int | None = None) -> list[dict[str, Any]]:
        """The newest `limit` jobs (older than job `before`, if given), oldest first, each
        with its members counted by status rather than listed: a page of the job list
        costs the same with ten nodes or ten thousand."""
        rows = self._query(
            "SELECT id, kind, target, options, status, abort, created_at, updated_at, ended_at, stats FROM jobs "
            + ("WHERE id < ? " if before is not None else "") + "ORDER BY id DESC LIMIT ?",
            (before, limit) if before is not None else (limit,))
        docs = []
        for row in reversed(rows):
            doc = dict(row)
            doc["options"] = json.loads(doc["options"])
            doc["abort"] = bool(doc["abort"])
            doc["stats"] = json.loads(doc["stats"] or "{}")
            for table in ("job_nodes", "job_guests"):
                counts = self._query(f"SELECT status, COUNT(*) FROM {table} WHERE job_id = ? GROUP BY status",
                                     (doc["id"],))
                doc["node_counts" if table == "job_nodes" else "guest_counts"] = {r[0]: r[1] for r in counts}
            docs.append(doc)
        return docs

    def running_job_ids(self, kind: tuple[JobKind, ...] = ()) -> list[int]:
        sql = "SELECT id FROM jobs WHERE status = ?"
        args: list[str] = [JobStatus.RUNNING]
        if kind:
            sql += f" AND kind IN ({', '.join('?' * len(kind))})"
            args += kind
        return [int(r[0]) for r in self._query(sql + " ORDER BY id", tuple(args))]

    def job_aborted(self, job_id: int) -> bool:
        """Only the job's abort flag: what each of its members reads before it starts."""
        rows = self._query("SELECT abort FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise NotFound(f"no job {job_id}")
        return bool(rows[0][0])

    def job_options(self, job_id: int) -> dict[str, Any]:
        rows = self._query("SELECT options FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise NotFound(f"no job {job_id}")
        return dict(json.loads(rows[0][0]))

    def set_job_member(self, job_id: int, member: int | str, status: MemberStatus, message: str | None = None,
                       transferred: int | None = None, step: MemberStep | None = None) -> None:
        """One member of a job: a node (by id) of a reimage or rollback, or a guest (by
        name) of a deploy. Its start and end times follow its status."""
        table, key = ("job_nodes", "node_id") if isinstance(member, int) else ("job_guests", "guest")
        now = time.time()
        started = now if status == MemberStatus.RUNNING else None
        ended = now if status in MEMBER_ENDED else None
        with self._tx() as db:
            db.execute(
                f"UPDATE {table} SET status = ?, message = COALESCE(?, message), bytes = COALESCE(?, bytes), "
                "step = ?, started_at = COALESCE(started_at, ?), ended_at = COALESCE(?, ended_at) "
                f"WHERE job_id = ? AND {key} = ?",
                (status, message, transferred, step, started, ended, job_id, member))
            db.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (now, job_id))

    def _add_job_stat(self, job_id: int, key: str, item: Any) -> None:
        with self._tx() as db:
            row = db.execute("SELECT stats FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"no job {job_id}")
            stats = json.loads(row["stats"] or "{}")
            stats.setdefault(key, []).append(item)
            db.execute("UPDATE jobs SET stats = ?, updated_at = ? WHERE id = ?",
                       (json.dumps(stats, sort_keys=True), time.time(), job_id))

    def add_job_note(self, job_id: int, note: str) -> None:
        """Something the job decided that its operator should read (said once)."""
        self._add_job_stat(job_id, "notes", note)

    def add_job_session(self, job_id: int, report: dict[str, Any]) -> None:
        """A multicast session's report, kept with the job it served."""
        self._add_job_stat(job_id, "multicast", report)

    def request_abort(self, job_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET abort = 1, updated_at = ? WHERE id = ? AND status = ?",
                       (time.time(), job_id, JobStatus.RUNNING))

    def end_job(self, job_id: int, status: JobStatus) -> None:
        """Close the job and release its nodes."""
        now = time.time()
        with self._tx() as db:
            for table in ("job_nodes", "job_guests"):
                db.execute(f"UPDATE {table} SET status = ?, ended_at = ? WHERE job_id = ? AND status = ?",
                           (MemberStatus.SKIPPED, now, job_id, MemberStatus.PENDING))
            db.execute("UPDATE jobs SET status = ?, updated_at = ?, ended_at = ? WHERE id = ?",
                       (status, now, now, job_id))
            db.execute("UPDATE nodes SET job_id = NULL WHERE job_id = ?", (job_id,))
