"""Counts of the fleet by kind, one GROUP BY each: what the metrics' gauges and the
dashboard's summaries show."""

from __future__ import annotations

from .base import SqlBase

Tally = list[tuple[tuple[str, ...], int]]


class TallyRows(SqlBase):
    def _tally(self, sql: str) -> Tally:
        return [(tuple(str(v) for v in row[:-1]), int(row[-1])) for row in self._query(sql)]

    def tally_nodes(self) -> Tally:
        """(rack, state) -> nodes."""
        return self._tally("SELECT rack, state, COUNT(*) FROM nodes GROUP BY rack, state")

    def tally_lost_hosts(self) -> Tally:
        """(rack,) -> active hosts whose host agent went silent."""
        return self._tally("SELECT rack, COUNT(*) FROM nodes WHERE state = 'active' AND host_lost = 1 GROUP BY rack")

    def tally_jobs(self) -> Tally:
        """(kind, status) -> jobs."""
        return self._tally("SELECT kind, status, COUNT(*) FROM jobs GROUP BY kind, status")

    def tally_job_members(self) -> Tally:
        """(member, kind, status) -> the nodes and guests of jobs, by their status in the job."""
        return self._tally("SELECT 'node', j.kind, m.status, COUNT(*) FROM job_nodes m JOIN jobs j "
                           "ON j.id = m.job_id GROUP BY j.kind, m.status") + \
            self._tally("SELECT 'guest', j.kind, m.status, COUNT(*) FROM job_guests m JOIN jobs j "
                        "ON j.id = m.job_id GROUP BY j.kind, m.status")

    def tally_guests(self) -> Tally:
        """(role, state) -> guests."""
        return self._tally("SELECT role, state, COUNT(*) FROM guests GROUP BY role, state")
