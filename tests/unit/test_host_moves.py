"""Guest-aware reimage planning: a host's guests are moved to hosts outside the job (or
stopped and made again there when none has room, or by setting), no role loses more than
one upgrade domain's worth of guests in a batch, and a host that alone holds more is
refused unless forced. Healing's plan: a host out for repair has its guests moved."""

import time
from pathlib import Path

import pytest

from provisioner.config import Settings
from provisioner.errors import Conflict, InvalidInput
from provisioner.images import Catalog
from provisioner.states import State
from provisioner.statuses import JobKind, PlanAction
from provisioner.store import Store
from provisioner.workflows.endpoints import EndpointService
from provisioner.workflows.guests import GuestService
from provisioner.workflows.hostmoves import HostMoves
from tests.unit.stores import new_store

ROLES = """
roles:
  - name: web
    base: guest
    vcpus: 1
    memory_mib: 256
    count: {web}
    upgrade_domains: 2
    spread: {spread}
"""


def _host(store: Store, name: str, rack: str, cores: int) -> None:
    node = store.create_node(name=name, mac=f"52:54:00:00:00:{len(store.list_nodes()) + 1:02x}", rack=rack,
                             bmc_address="10.0.0.1", bmc_port=623, bmc_username="admin", bmc_password_sealed="x",
                             cipher_suite=3)
    with store._tx() as db:
        db.execute("UPDATE nodes SET state = 'active' WHERE id = ?", (node.id,))
    store.update_node(node.id, host_key="ssh-ed25519 AAAA", host_last_seen=time.time(),
                      host_facts={"address": "192.0.2.1", "cpu": {"count": cores}, "memory": {"total_mib": 4096}})


def _make(tmp_path: Path, cores: tuple[int, int] = (3, 3), **settings: object) -> tuple[GuestService, HostMoves]:
    store = new_store()
    _host(store, "n1", "rack-1", cores[0])
    _host(store, "n2", "rack-2", cores[1])
    store.add_image(name="guest", version="1", sha256="a" * 64, fmt="qcow2", virtual_size=1 << 30, size=1 << 20,
                    source="test")
    s = Settings(server_data_dir=tmp_path, guests_reserved_cores=1, **settings)  # type: ignore[arg-type]
    svc = GuestService(s, store, Catalog(tmp_path / "images", store), EndpointService(s, store, None, None))
    return svc, HostMoves(s, store, svc)


def _deploy(svc: GuestService, web: int = 2, spread: str = "rack") -> None:
    """As if the deploy had run: the file on record, every guest of its plan ready."""
    body = {"roles": ROLES.format(web=web, spread=spread), "source": "roles.yaml"}
    doc = svc.plan(body)
    work = [e for e in doc["entries"] if e["action"] != "keep"]
    job = svc.store.create_deploy_job("roles.yaml", {}, work)
    for e in work:
        svc.store.set_guest(e["guest"], state="ready", spec_sha256=e["spec"]["spec_sha256"],
                            host=e["spec"]["guest"]["host"], cores=e["spec"]["guest"]["cores"])
    svc.store.end_job(job, "done")
    svc.store.save_deployment("roles.yaml", body)


def _nodes(svc: GuestService, *names: str) -> list[list]:
    return [[svc.store.get_node(n) for n in names]]


def _moves(entries: list[dict]) -> list[tuple]:
    return [(e["guest"], str(e["action"]), e["batch"], e["spec"].get("old_host") or e["host"], e["host"])
            for e in entries]


def test_a_hosts_guests_move_to_a_host_outside_the_job(tmp_path):
    svc, moves = _make(tmp_path)
    _deploy(svc)
    assert {g["name"]: g["host"] for g in svc.store.guests()} == {"web-1": "n1", "web-2": "n2"}
    batches, entries = moves.plan(_nodes(svc, "n1"), JobKind.REIMAGE, force=False)
    assert [[n.name for n in b] for b in batches] == [["n1"]]
    assert _moves(entries) == [("web-1", "move", 0, "n1", "n2")]
    assert entries[0]["spec"]["because"] == "its host n1 was reimaged"
    assert entries[0]["spec"]["guest"]["host"] == "n2" and entries[0]["spec"]["old_host"] == "n1"


def test_with_no_room_elsewhere_or_by_setting_a_guest_stops_and_comes_back(tmp_path):
    svc, moves = _make(tmp_path, cores=(3, 2))  # n2 has one core for guests: web-2's
    _deploy(svc)
    _, entries = moves.plan(_nodes(svc, "n1"), JobKind.REIMAGE, force=False)
    assert _moves(entries) == [("web-1", "stop", 0, "n1", "n1")]
    assert entries[0]["spec"]["because"].startswith("no room on the other hosts (role web: no room for web-1")

    svc, moves = _make(tmp_path, healing_on_reimage="stop")
    _deploy(svc)
    _, entries = moves.plan(_nodes(svc, "n1"), JobKind.ROLLBACK, force=False)
    assert _moves(entries) == [("web-1", "stop", 0, "n1", "n1")]
    assert entries[0]["spec"]["because"] == "healing.on_reimage is stop"


def test_no_role_loses_more_than_one_upgrade_domains_worth_in_a_batch(tmp_path):
    svc, moves = _make(tmp_path)
    _deploy(svc)
    batches, entries = moves.plan(_nodes(svc, "n1", "n2"), JobKind.REIMAGE, force=False)
    assert [[n.name for n in b] for b in batches] == [["n1"], ["n2"]], "web-1 and web-2 never down together"
    assert [(e["guest"], e["action"], e["batch"]) for e in entries] == \
        [("web-1", PlanAction.STOP, 0), ("web-2", PlanAction.STOP, 1)], "no host outside the job: stopped"


def test_a_host_holding_more_than_a_roles_minimum_allows_is_refused_unless_forced(tmp_path):
    svc, moves = _make(tmp_path, cores=(4, 1))  # n2 has no core for guests: both on n1
    _deploy(svc, web=2, spread="none")
    assert {g["host"] for g in svc.store.guests()} == {"n1"}
    with pytest.raises(Conflict, match=r"cannot reimage: n1 runs 2 of role web's 2 guests: reimaging it takes them "
                                       r"down at once, leaving 0, below the role's minimum of 1 .*--force"):
        moves.plan(_nodes(svc, "n1"), JobKind.REIMAGE, force=False)
    _, entries = moves.plan(_nodes(svc, "n1"), JobKind.REIMAGE, force=True)
    assert {(e["guest"], e["action"]) for e in entries} == {("web-1", PlanAction.STOP), ("web-2", PlanAction.STOP)}


def test_guests_with_no_roles_file_on_record_refuse_the_reimage(tmp_path):
    svc, moves = _make(tmp_path)
    _deploy(svc)
    with svc.store._tx() as db:
        db.execute("DELETE FROM deployments")
    with pytest.raises(InvalidInput, match="guests run on n1 but no roles file is on record"):
        moves.plan(_nodes(svc, "n1"), JobKind.REIMAGE, force=False)
    svc.store.delete_guest("web-2")
    batches, entries = moves.plan(_nodes(svc, "n2"), JobKind.REIMAGE, force=False)
    assert entries == [] and [[n.name for n in b] for b in batches] == [["n2"]], "a host with no guests needs none"


def test_a_host_out_for_repair_has_its_guests_moved_by_the_next_plan(tmp_path):
    svc, _ = _make(tmp_path)
    _deploy(svc)
    with svc.store._tx() as db:
        db.execute("UPDATE nodes SET state = ?, last_error = 'declared dead' WHERE name = 'n1'",
                   (State.OUT_FOR_REPAIR,))
    doc = svc.plan(svc.store.last_deployment() or {})
    moved = [e for e in doc["entries"] if e["action"] == PlanAction.MOVE]
    assert [(e["guest"], e["spec"]["old_host"], e["host"]) for e in moved] == [("web-1", "n1", "n2")]
    assert moved[0]["spec"]["because"] == "its host n1 is out for repair"


def test_healing_with_no_room_says_what_is_short_and_changes_nothing(tmp_path):
    svc, _ = _make(tmp_path, cores=(3, 2))  # n2 keeps one core for itself and gives its other to web-2
    _deploy(svc)
    with svc.store._tx() as db:
        db.execute("UPDATE nodes SET state = ? WHERE name = 'n1'", (State.OUT_FOR_REPAIR,))
    before = svc.store.guests()
    with pytest.raises(InvalidInput, match=r"role web: no room for web-1, which needs 1 core and 256 MiB: the most "
                                           r"free is n2 with 0 cores and \d+ MiB \(short by 1 core and 0 MiB\)"):
        svc.heal("n1")
    assert svc.store.guests() == before and all(j["kind"] != "heal" for j in svc.store.jobs())
