"""Controllers sharing one database: who holds which rack (wanted racks first, orphans to
whoever asks, a rack given back when its controller returns), who runs which job (one
claim wins; a dead owner's job is taken), and the work a controller takes up from the
database. The store is the real one (SQLite, or PostgreSQL: tests/unit/stores.py)."""

import time

from provisioner import config
from provisioner.power import PowerManager
from provisioner.power.fake import FakePowerDriver
from provisioner.secrets import SecretBox
from provisioner.states import Event, Step
from provisioner.statuses import JobKind
from provisioner.workflows.controllers import ControllerRole
from provisioner.workflows.engine import Conductor
from tests.unit.stores import new_store


def node(store, name, rack):
    return store.create_node(name=name, mac=f"52:54:00:00:{len(name):02x}:{sum(map(ord, name)) % 256:02x}",
                             rack=rack, bmc_address="10.0.0.1", bmc_port=623, bmc_username="admin",
                             bmc_password_sealed="sealed", cipher_suite=3)


def expire(store, controller):
    with store._tx() as db:
        db.execute("UPDATE controllers SET lease_until = 0 WHERE name = ?", (controller,))
        db.execute("UPDATE rack_leases SET lease_until = 0 WHERE controller = ?", (controller,))
        db.execute("UPDATE jobs SET lease_until = 0 WHERE owner = ?", (controller,))


def test_racks_go_to_who_wants_them_orphans_to_who_asks_and_come_back(tmp_path):
    store = new_store(tmp_path)
    node(store, "a1", "rack-a")
    node(store, "b1", "rack-b")
    node(store, "z1", "rack-z")  # nobody wants it
    store.register_controller("ctl-a", "", ("rack-a",))
    store.register_controller("ctl-b", "", ("rack-b",))
    assert store.claim_racks("ctl-a", ("rack-a",))[0] == {"rack-a", "rack-z"}  # rack-b: ctl-b is alive and wants it
    assert store.claim_racks("ctl-b", ("rack-b",))[0] == {"rack-b"}
    assert store.claim_racks("ctl-a", ("rack-a",))[0] == {"rack-a", "rack-z"}, "renewed, not taken twice"
    expire(store, "ctl-b")  # ctl-b died: its rack is an orphan
    assert store.claim_racks("ctl-a", ("rack-a",))[0] == {"rack-a", "rack-b", "rack-z"}
    assert store.rack_holder("rack-b") == "ctl-a"
    store.register_controller("ctl-b", "", ("rack-b",))  # back: ctl-a gives rack-b back...
    assert store.claim_racks("ctl-b", ("rack-b",))[0] == set(), "...but not before its lease is let go"
    assert store.claim_racks("ctl-a", ("rack-a",))[0] == {"rack-a", "rack-z"}
    assert store.claim_racks("ctl-b", ("rack-b",))[0] == {"rack-b"}
    listed = {c["name"]: c for c in store.controllers()}
    assert listed["ctl-a"]["racks"] == ["rack-a", "rack-z"] and listed["ctl-b"]["wants"] == ("rack-b",)
    store.retire_controller("ctl-b")  # a clean stop frees its racks at once
    assert store.rack_holder("rack-b") is None and not {c["name"]: c for c in store.controllers()}["ctl-b"]["alive"]


def test_a_running_job_is_claimed_once_and_taken_from_a_dead_owner(tmp_path):
    store = new_store(tmp_path)
    n = node(store, "a1", "rack-a")
    store.controller = "ctl-a"
    job = store.create_job(JobKind.REIMAGE, "all", {"kind": "reimage"}, [(n.id, 0)])
    assert store.job_owner(job) == "ctl-a"
    assert store.claim_jobs("ctl-b", set()) == [], "ctl-a's lease holds"
    assert store.claim_jobs("ctl-a", {job}) == [], "ctl-a runs it already"
    assert store.claim_jobs("ctl-a", set()) == [], "just created here, its thread not yet started"
    assert store.claim_jobs("ctl-a", set(), own=True) == [(job, JobKind.REIMAGE)], "its own, after a restart"
    expire(store, "ctl-a")
    assert store.claim_jobs("ctl-b", set()) == [(job, JobKind.REIMAGE)]
    assert store.claim_jobs("ctl-c", set()) == [], "one claim wins"
    assert store.job_owner(job) == "ctl-b"
    store.renew_jobs("ctl-a", {job})  # the old owner, back, cannot renew what is not its own
    assert store.job_owner(job) == "ctl-b"


def test_a_controller_takes_up_the_nodes_of_its_racks_that_nobody_works(tmp_path):
    store = new_store(tmp_path)
    settings = config.Settings(server_data_dir=tmp_path / "data", controller_name="ctl-a",
                               controller_racks="rack-a", controller_lease=5)
    conductor = Conductor(settings, store, PowerManager(FakePowerDriver(), min_interval=0), SecretBox(tmp_path / "k"))
    mine, theirs = node(store, "a1", "rack-a"), node(store, "b1", "rack-b")
    store.register_controller("ctl-b", "", ("rack-b",))
    store.claim_racks("ctl-b", ("rack-b",))
    for n in (mine, theirs):  # both left at a power step by a controller that died
        store.transition(n, Event.INSPECT, step=Step.POWER_ON, deadline=time.time() + 60)
    resumed = []
    conductor.resumers.append(lambda n: resumed.append(n.name))
    role = ControllerRole(settings, store, conductor)
    role.start()
    assert role.held == set(), "ctl-b took rack-a while no live controller wanted it"
    assert store.claim_racks("ctl-b", ("rack-b",))[0] == {"rack-b"}, "and gives it back now ctl-a does"
    role.tick()
    assert role.held == {"rack-a"} and conductor.racks == {"rack-a"}
    assert resumed == ["a1"], "only its own rack's node"
    said = [e["message"] for e in store.events(store.get_node("a1")) if e["event"] == "controller"]
    assert said == ["taken up by controller ctl-a at step power-on"] and store.events(mine)[-1]["controller"] == "ctl-a"
    role.tick()
    assert resumed == ["a1", "a1"] and len([e for e in store.events(mine) if e["event"] == "controller"]) == 1
    assert not conductor.serves("rack-b") and conductor.serves("rack-a")
    role.stop()
    assert store.rack_holder("rack-a") is None
