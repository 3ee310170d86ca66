"""One batch engine for every job that works through members in upgrade-domain batches:
reimage and rollback (a member is a node) and deploy (a member is a guest; the unit of
work is one host's share of a batch). It runs the batches in order, the units of a batch
with bounded parallelism, stops before the next batch when the job is aborted or a batch
failed beyond its threshold, marks what was not started as skipped, and says how the job
ended. What a unit does, and how to resume one after a restart, is the caller's."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

from ..statuses import JobStatus, MemberStatus
from ..store import Store

LOG = logging.getLogger(__name__)
U = TypeVar("U")


class BatchEngine:
    def __init__(self, store: Store) -> None:
        self.store = store

    def run(self, job_id: int, batches: Sequence[Sequence[U]], work: Callable[[U], object], *,
            parallel: int, max_failures: int, failed: Callable[[int], list[str]],
            before: Callable[[int], None] = lambda i: None, after: Callable[[int], None] = lambda i: None) -> JobStatus:
        """Run `work` on each unit of each batch in turn; `failed(i)` names the members of
        batch i that failed once it has run. `before(i)` and `after(i)` bracket batch i
        (`after` also when the batch's work raised). A batch with more failures than
        `max_failures` stops the job: STOPPED if batches were left, FAILED if it was the last."""
        for i, units in enumerate(batches):
            if self.store.job_aborted(job_id):
                self.skip(job_id, "job aborted")
                return JobStatus.ABORTED
            before(i)
            try:
                with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix=f"job-{job_id}") as pool:
                    list(pool.map(work, units))
            finally:
                after(i)
            names = failed(i)
            if len(names) > max_failures:
                LOG.warning("job %d: batch %d had %d failures (threshold %d): stopping", job_id, i + 1,
                            len(names), max_failures)
                self.skip(job_id, f"not started: {', '.join(names)} failed in batch {i + 1}")
                return JobStatus.STOPPED if i < len(batches) - 1 else JobStatus.FAILED
        job = self.store.job(job_id)
        members = job["nodes"] + job["guests"]
        return JobStatus.DONE if all(m["status"] == MemberStatus.DONE for m in members) else JobStatus.FAILED

    def skip(self, job_id: int, why: str) -> None:
        """Every member not started yet will not be."""
        job = self.store.job(job_id)
        for member in job["nodes"]:
            if member["status"] == MemberStatus.PENDING:
                self.store.set_job_member(job_id, int(member["node_id"]), MemberStatus.SKIPPED, why)
        for guest in job["guests"]:
            if guest["status"] == MemberStatus.PENDING:
                self.store.set_job_member(job_id, str(guest["name"]), MemberStatus.SKIPPED, why)
