"""Rows of the nightly runs: each night, and each machine's result and phase times."""

from __future__ import annotations

import json
from typing import Any

from .base import SqlBase


class NightRows(SqlBase):
    def record_night(self, pool: str, job_id: int | None, started_at: float, ended_at: float,
                     machines: list[dict[str, Any]]) -> int:
        """One night and its machines ({name, rack, passed, reason, phases}), in one transaction."""
        with self._tx() as db:
            night = int(db.execute(
                "INSERT INTO nights (pool, job_id, started_at, ended_at, passed, failed) VALUES (?, ?, ?, ?, ?, ?) "
                "RETURNING id", (pool, job_id, started_at, ended_at, sum(1 for m in machines if m["passed"]),
                                 sum(1 for m in machines if not m["passed"]))).fetchone()[0])
            for m in machines:
                db.execute("INSERT INTO night_machines (night_id, node, rack, passed, reason, phases) "
                           "VALUES (?, ?, ?, ?, ?, ?)", (night, m["name"], m["rack"], int(bool(m["passed"])),
                                                        m.get("reason"), json.dumps(m["phases"])))
        return night

    def nights(self, limit: int) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT id, pool, job_id, started_at, ended_at, passed, failed FROM nights "
                                             "ORDER BY id DESC LIMIT ?", (limit,))]

    def machine_nights(self, names: list[str] | None, last: int) -> dict[str, list[dict[str, Any]]]:
        """Each machine's last `last` nights, newest first (every machine's when `names` is None)."""
        where: str = ""
        args: tuple[str, ...] = ()
        if names is not None:
            if not names:
                return {}
            where = f"WHERE m.node IN ({','.join('?' for _ in names)})"
            args = tuple(names)
        rows = self._query(
            "SELECT node, night_id, started_at, pool, passed, reason, phases FROM ("
            "SELECT m.node, m.night_id, n.started_at, n.pool, m.passed, m.reason, m.phases, "
            "ROW_NUMBER() OVER (PARTITION BY m.node ORDER BY m.night_id DESC) AS k "
            f"FROM night_machines m JOIN nights n ON n.id = m.night_id {where}) ranked WHERE k <= ? "
            "ORDER BY node, night_id DESC", (*args, last))
        out: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            out.setdefault(r["node"], []).append({
                "night": int(r["night_id"]), "started_at": r["started_at"], "pool": r["pool"],
                "passed": bool(r["passed"]), "reason": r["reason"],
                "phases": [(str(p), float(s)) for p, s in json.loads(r["phases"])]})
        return out
