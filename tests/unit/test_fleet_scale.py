"""The paths that keep the cost per node flat: pages of nodes by cursor and filter, the
event feed, a node's waiter woken by its transition, the heartbeat cadence stretched to
the fleet, and a lost-host sweep that marks nobody lost while the control plane was busy."""

import threading
import time

import pytest

from provisioner import config
from provisioner.api.views import cursor_for, cursor_of
from provisioner.errors import InvalidInput
from provisioner.power import PowerManager
from provisioner.power.fake import FakePowerDriver
from provisioner.secrets import SecretBox
from provisioner.states import Event, State, Step
from provisioner.store import Store
from provisioner.workflows.engine import Conductor
from provisioner.workflows.heartbeats import Heartbeats, cadence
from tests.unit.stores import new_store


def make(store, i, rack="rack-1", tags=None):
    node = store.create_node(name=f"n{i:03d}", mac=f"52:54:00:00:01:{i:02x}", rack=rack, bmc_address="10.0.0.1",
                             bmc_port=623, bmc_username="admin", bmc_password_sealed="sealed", cipher_suite=3)
    if tags:
        store.update_node(node.id, tags=tags)
    return node


def test_pages_walk_the_fleet_once_in_order_with_filters(store):
    for i in range(7):
        make(store, i, rack=f"rack-{i % 2}", tags=["gpu"] if i % 3 == 0 else ["x_y"])
    seen, after = [], None
    while True:
        page = store.page_nodes(after=after, limit=3)
        seen += [(n.rack, n.name) for n in page]
        if len(page) < 3:
            break
        after = (page[-1].rack, page[-1].name)
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 7
    assert [n.name for n in store.page_nodes(rack="rack-1")] == ["n001", "n003", "n005"]
    assert [n.name for n in store.page_nodes(tag="gpu")] == ["n000", "n006", "n003"]
    # LIKE's wildcards in a tag are plain characters: "x%y" and "x_z" match nothing.
    assert store.page_nodes(tag="x%y") == [] and store.page_nodes(tag="x_z") == []
    assert len(store.page_nodes(tag="x_y")) == 4
    assert [n.name for n in store.page_nodes(state="enrolled", limit=2)] == ["n000", "n002"]


def test_a_cursor_is_opaque_and_a_forged_one_is_refused():
    assert cursor_of(cursor_for("rack-1", "n001")) == ("rack-1", "n001")
    for bad in ("%%%", "bm90IGpzb24", cursor_for("rack-1", "n1")[:-3] + "!!", "WzEsMl0"):
        with pytest.raises(InvalidInput, match="cursor"):
            cursor_of(bad)


def test_the_feed_pages_events_and_a_waiter_wakes_when_one_comes(store):
    node = make(store, 1)
    first = store.feed(0, 10)
    assert [e["event"] for e in first] == ["enroll"] and first[0]["node"] == "n001"
    after = first[-1]["id"]
    assert store.feed(after, 10) == []
    generation = store.event_generation
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(store.wait_events(generation, 3600)))
    waiter.start()
    store.record_event(node, "note", "hello")
    waiter.join(60)  # an hour before its own timeout: only the event can have ended the wait
    assert woke == [True], "the event woke the waiter"
    assert [e["message"] for e in store.feed(after, 10)] == ["hello"]


def test_a_transition_wakes_the_nodes_waiter_and_no_other(store):
    a, b = make(store, 1), make(store, 2)
    with store.watching(a.id) as woke_a, store.watching(b.id) as woke_b:
        store.transition(a, Event.INSPECT, step=Step.POWER_ON, deadline=time.time() + 60)
        assert woke_a.wait(5) and not woke_b.is_set()
    assert store.node_state(a.id) == State.INSPECTING
    with store.watching(b.id) as woke_b:
        store.wake_all()  # the daemon stops: every waiter goes
        assert woke_b.is_set()


def test_the_heartbeat_cadence_stretches_with_the_fleet():
    s = config.Settings(agent_host_heartbeat_interval=10, agent_host_lost_after=45,
                        agent_host_heartbeats_per_second=50)
    assert cadence(s, 0) == cadence(s, 500) and cadence(s, 500).interval == 10
    big = cadence(s, 10_000)
    assert big.interval == 200 and big.lost_after == 900  # 50 heartbeats a second, at 10,000 hosts


@pytest.fixture
def beats(tmp_path):
    settings = config.Settings(server_data_dir=tmp_path / "data", agent_host_lost_after=20)
    store = new_store(tmp_path)
    conductor = Conductor(settings, store, PowerManager(FakePowerDriver(), min_interval=0), SecretBox(tmp_path / "key"))
    node = make(store, 1)
    with store._tx() as db:
        db.execute("UPDATE nodes SET state = 'active' WHERE id = ?", (node.id,))
    store.update_node(node.id, host_last_seen=time.time() - 60)
    clock = [1000.0]
    yield Heartbeats(conductor, monotonic=lambda: clock[0]), conductor, store, clock
    store.close()


def test_a_silent_host_is_lost_but_not_while_the_control_plane_was_busy(beats):
    heartbeats, conductor, store, clock = beats
    refused = [995.0]  # the API turned a request away 5 s ago
    conductor.pressure_sources.append(("the API turned requests away as busy", lambda: refused[0]))
    assert heartbeats.busy_within(20) == "the API turned requests away as busy 5s ago"
    heartbeats.sweep()
    assert not store.get_node("n001").host_lost, "not marked lost while the daemon could not hear it"
    conductor.stalled_at, refused[0] = 990.0, None  # the daemon's own periodic work ran late
    heartbeats.sweep()
    assert not store.get_node("n001").host_lost
    clock[0] = 1030.0  # quiet for longer than agent.host_lost_after: the silence is the host's
    heartbeats.sweep()
    node = store.get_node("n001")
    assert node.host_lost
    assert [e["message"] for e in store.events(node)][-1].startswith("host agent silent: lost")


def test_the_reaper_fails_only_overdue_nodes_of_the_racks_it_serves(tmp_path):
    store = new_store(tmp_path)
    conductor = Conductor(config.Settings(server_data_dir=tmp_path / "data"), store,
                          PowerManager(FakePowerDriver(), min_interval=0), SecretBox(tmp_path / "key"))
    late, early, elsewhere = make(store, 1), make(store, 2), make(store, 3, rack="rack-2")
    for node, deadline in ((late, time.time() - 1), (early, time.time() + 600), (elsewhere, time.time() - 1)):
        store.transition(node, Event.INSPECT, step=Step.POWER_ON, deadline=deadline)
    conductor.racks = {"rack-1"}  # rack-2 is another controller's
    assert [n.name for n in store.in_progress(overdue_at=time.time())] == ["n001", "n003"]
    assert conductor.reap_deadlines() == ["n001"]
    node = store.get_node("n001")
    assert node.state == State.INSPECT_FAILED and "step power-on (powering on) timed out" in str(node.last_error)
    assert store.get_node("n002").state == store.get_node("n003").state == State.INSPECTING
    store.close()
