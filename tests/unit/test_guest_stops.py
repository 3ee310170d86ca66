"""A reimage job's guests, carried out against fake hosts: a guest stopped while its host
is reimaged is drained, removed from the host and marked stopped; once the host is back
it is made again there and admitted; if the host does not come back it is failed, with
the reason. A guest moved off a fenced host leaves nothing to remove on it."""

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from provisioner.guests.placement import Guest
from provisioner.states import State
from provisioner.statuses import GuestState, JobKind, MemberStatus, MemberStep, PlanAction
from provisioner.store import Store
from provisioner.workflows.guestjobs import GuestJobs
from tests.unit.stores import new_store


class FakeHost:
    def __init__(self, name: str, log: list[tuple[str, str, str]]) -> None:
        self.name, self.log = name, log

    def __enter__(self) -> "FakeHost":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass

    def delete(self, guest: str, keep_console: bool = False) -> bool:
        self.log.append(("delete", self.name, guest))
        return True

    def create(self, guest: Guest, base: Any, files: dict[str, str], app: Any = None, **kw: Any) -> int:
        self.log.append(("create", self.name, guest.name))
        return 0

    def wait_ready(self, name: str, timeout: float = 0) -> float:
        return 1.0


class FakeLinks:
    def __init__(self) -> None:
        self.log: list[tuple[str, str, str]] = []

    def guest_host(self, record: Any) -> FakeHost:
        return FakeHost(record.name, self.log)


class FakeEndpoints:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def drain(self, name: str, wait: bool = True) -> None:
        self.calls.append(("drain", name))

    def admit(self, name: str) -> float:
        self.calls.append(("admit", name))
        return 0.0

    def changed(self) -> bool:
        return False


class FakeCatalog:
    def __init__(self, path: Path) -> None:
        self._path = path

    def local(self, sha: str) -> Path:
        return self._path


@pytest.fixture
def jobs(tmp_path: Path):
    store = new_store(tmp_path)
    for name, rack in (("n1", "rack-1"), ("h2", "rack-2")):
        store.add_host(name=name, address="192.0.2.1", port=22, rack=rack, host_key="ssh-ed25519 AAAA", cores=4,
                       memory_mib=4096)
    (tmp_path / "base").write_bytes(b"base")
    links, endpoints = FakeLinks(), FakeEndpoints()
    guest_jobs = GuestJobs(store, links, FakeCatalog(tmp_path / "base"), 10, 2, endpoints)  # type: ignore[arg-type]
    yield guest_jobs, store, links, endpoints
    store.close()


def _entry(action: PlanAction, host: str, old_host: str | None = None) -> dict[str, Any]:
    guest = Guest("web-1", "web", 1, host, (1,), 256, 0)
    return {"guest": "web-1", "action": action, "batch": 0, "host": host, "spec": {
        "guest": asdict(guest), "base": {"ref": "guest:1", "sha256": "a" * 64, "format": "qcow2", "size": 4,
                                        "virtual_size": 4},
        "app": None, "files": {}, "network": None, "spec_sha256": "s", "was": GuestState.READY,
        "old_host": old_host, "because": "its host n1 was reimaged"}}


def test_a_guest_stopped_for_its_hosts_reimage_is_made_again_there_after(jobs):
    guest_jobs, store, links, endpoints = jobs
    job = store.create_job(JobKind.REIMAGE, "n1", {}, [], guests=[_entry(PlanAction.STOP, "n1")])
    assert guest_jobs.run_batch(job, 0) == []
    member = store.job_guests(job)[0]
    assert (member["status"], member["step"]) == (MemberStatus.RUNNING, MemberStep.STOPPED)
    assert store.guest("web-1")["state"] == GuestState.STOPPED and links.log == [("delete", "n1", "web-1")]
    assert endpoints.calls == [("drain", "web-1")], "out of its endpoint before it goes"

    assert guest_jobs.run_batch(job, 0, returning=True) == []
    assert store.job_guests(job)[0]["status"] == MemberStatus.DONE
    row = store.guest("web-1")
    assert row["state"] == GuestState.READY and row["why"].startswith("made again on n1 at ")
    assert links.log[-1] == ("create", "n1", "web-1") and endpoints.calls[-1] == ("admit", "web-1")


def test_a_guest_stopped_on_a_host_that_does_not_come_back_is_failed(jobs):
    guest_jobs, store, links, _ = jobs
    job = store.create_job(JobKind.REIMAGE, "n1", {}, [], guests=[_entry(PlanAction.STOP, "n1")])
    guest_jobs.run_batch(job, 0)
    guest_jobs.fail_stopped(job, 0, "n1", "its host n1 did not come back (deploy-failed)")
    assert guest_jobs.run_batch(job, 0, returning=True) == ["web-1"]
    assert store.guest("web-1")["last_error"] == "its host n1 did not come back (deploy-failed)"
    assert [c for c in links.log if c[0] == "create"] == []


def test_a_guest_moved_off_a_fenced_host_leaves_nothing_to_remove_there(jobs, tmp_path):
    guest_jobs, store, links, _ = jobs
    node = store.create_node(name="n9", mac="52:54:00:00:00:09", rack="rack-1", bmc_address="10.0.0.1", bmc_port=623,
                             bmc_username="admin", bmc_password_sealed="x", cipher_suite=3)
    with store._tx() as db:
        db.execute("UPDATE nodes SET state = ? WHERE id = ?", (State.OUT_FOR_REPAIR, node.id))
    store.update_node(node.id, host_key="ssh-ed25519 AAAA",
                      host_facts={"address": "192.0.2.9", "cpu": {"count": 4}, "memory": {"total_mib": 4096}})
    entry = _entry(PlanAction.MOVE, "h2", old_host="n9")
    entry["spec"]["because"] = "its host n9 is out for repair"
    job = store.create_deploy_job("heal n9", {"kind": JobKind.HEAL}, [entry], kind=JobKind.HEAL)
    assert guest_jobs.run_batch(job, 0) == []
    assert links.log == [("delete", "h2", "web-1"), ("create", "h2", "web-1")], "nothing asked of n9: it is off"
    row = store.guest("web-1")
    assert row["host"] == "h2" and row["why"].startswith("moved from n9 at ") and \
        row["why"].endswith("because its host n9 is out for repair")
