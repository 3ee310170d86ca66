"""The batch engine every job uses: batches in order, a threshold that stops the job
before the next batch, abort between batches, and what was not started is skipped."""

import pytest

from provisioner.statuses import JobKind, JobStatus, MemberStatus
from provisioner.workflows.batches import BatchEngine


def job_of(store, batches):
    """A reimage job over nodes n1..nN, `batches` a list of node counts."""
    members, ids = [], []
    for b, count in enumerate(batches):
        for _ in range(count):
            i = len(ids) + 1
            node = store.create_node(name=f"n{i}", mac=f"52:54:00:00:00:{i:02x}", rack="rack-1",
                                     bmc_address="10.0.0.1", bmc_port=623, bmc_username="admin",
                                     bmc_password_sealed="sealed", cipher_suite=3)
            ids.append(node.id)
            members.append((node.id, b))
    job_id = store.create_job(JobKind.REIMAGE, "rack-1", {}, members)
    by_batch = [[m for m in store.job(job_id)["nodes"] if m["batch"] == b] for b in range(len(batches))]
    return job_id, by_batch


def run(store, job_id, batches, fail=(), max_failures=0, abort_after=None):
    done = []

    def work(member):
        status = MemberStatus.FAILED if member["name"] in fail else MemberStatus.DONE
        store.set_job_member(job_id, int(member["node_id"]), status)
        done.append(member["name"])
        if member["name"] == abort_after:
            store.request_abort(job_id)

    def failed(i):
        names = {m["name"] for m in batches[i]}
        return [m["name"] for m in store.job(job_id)["nodes"] if m["name"] in names and m["status"] == "failed"]

    status = BatchEngine(store).run(job_id, batches, work, parallel=2, max_failures=max_failures, failed=failed)
    return status, done, {m["name"]: (m["status"], m["message"]) for m in store.job(job_id)["nodes"]}


def test_every_batch_done_is_done(store):
    job_id, batches = job_of(store, [2, 2])
    status, done, members = run(store, job_id, batches)
    assert status == JobStatus.DONE and sorted(done) == ["n1", "n2", "n3", "n4"]


def test_a_failure_beyond_the_threshold_stops_before_the_next_batch(store):
    job_id, batches = job_of(store, [2, 2])
    status, done, members = run(store, job_id, batches, fail={"n2"})
    assert status == JobStatus.STOPPED and sorted(done) == ["n1", "n2"]
    assert members["n3"] == ("skipped", "not started: n2 failed in batch 1")


def test_a_failure_within_the_threshold_goes_on_but_the_job_failed(store):
    job_id, batches = job_of(store, [2, 2])
    status, done, _ = run(store, job_id, batches, fail={"n2"}, max_failures=1)
    assert status == JobStatus.FAILED and len(done) == 4


def test_a_failure_in_the_last_batch_is_failed_not_stopped(store):
    job_id, batches = job_of(store, [1, 1])
    assert run(store, job_id, batches, fail={"n2"})[0] == JobStatus.FAILED


def test_abort_between_batches(store):
    job_id, batches = job_of(store, [1, 2])
    status, done, members = run(store, job_id, batches, abort_after="n1")
    assert status == JobStatus.ABORTED and done == ["n1"]
    assert members["n2"] == ("skipped", "job aborted") and members["n3"][0] == "skipped"
