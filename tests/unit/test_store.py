import sqlite3

import pytest

from provisioner.errors import Conflict, InvalidTransition, NotFound
from provisioner.states import Event, State, Step
from provisioner.store import Store
from provisioner.store.schema import MIGRATIONS


def make(store, mac="52:54:00:00:00:01", name="n1", rack="rack-1"):
    return store.create_node(name=name, mac=mac, rack=rack, bmc_address="10.0.0.1", bmc_port=623,
                             bmc_username="admin", bmc_password_sealed="sealed", cipher_suite=3)


def test_schema_is_migrated_in_wal_mode(store):
    assert store.schema_version() == len(MIGRATIONS)
    if store.engine == "sqlite":
        assert sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened = Store(store.path)  # a second controller, or a restart: nothing to migrate again
    assert reopened.schema_version() == len(MIGRATIONS)
    reopened.close()


def test_node_found_by_name_mac_or_id(store):
    node = make(store)
    for ident in ("n1", "52:54:00:00:00:01", str(node.id)):
        assert store.get_node(ident).id == node.id
    with pytest.raises(NotFound):
        store.get_node("nope")


def test_duplicate_mac_or_name_changes_nothing(store):
    make(store)
    with pytest.raises(Conflict, match="already enrolled as node n1"):
        make(store, name="n2")
    with pytest.raises(Conflict, match="named n1"):
        make(store, mac="52:54:00:00:00:02")
    assert len(store.list_nodes()) == 1


def test_transitions_follow_the_table_and_are_recorded(store):
    node = make(store)
    node = store.transition(node, Event.INSPECT, step=Step.POWER_ON, deadline=123.0)
    assert (node.state, node.step, node.target_state, node.deadline) == (
        State.INSPECTING, Step.POWER_ON, State.READY, 123.0)
    node = store.transition(node, Event.FAIL, error="power-on: BMC said no")
    assert node.state == State.INSPECT_FAILED and node.last_error == "power-on: BMC said no"
    assert node.step is None and node.deadline is None
    with pytest.raises(InvalidTransition):
        store.transition(node, Event.DONE)
    events = store.events(node)
    assert [e["event"] for e in events] == ["enroll", "inspect", "fail"]
    assert events[-1]["message"] == "power-on: BMC said no"


def test_token_is_issued_once_per_boot(store):
    node = make(store)
    assert store.issue_token(node.id, "h1")
    assert not store.issue_token(node.id, "h2")
    assert store.node_by_token_hash("h1").id == node.id
    store.update_node(node.id, agent_token_hash=None)
    assert store.issue_token(node.id, "h2")
    assert store.node_by_token_hash("h1") is None


def test_busy_nodes_cannot_be_deleted(store):
    node = store.transition(make(store), Event.INSPECT, step=Step.WAIT_AGENT, deadline=1.0)
    with pytest.raises(InvalidTransition):
        store.delete_node(node)
    assert store.in_progress()[0].id == node.id


def test_discovered_macs_count_and_hide_once_enrolled(store):
    store.record_discovered("52:54:00:00:00:09")
    store.record_discovered("52:54:00:00:00:09")
    assert store.discovered()[0]["seen_count"] == 2
    make(store, mac="52:54:00:00:00:09")
    assert store.discovered() == []


def test_a_deploy_an_earlier_boot_was_running_is_superseded_not_left_running(store):
    from provisioner.agent.protocol import CommandKind, CommandStatus
    n = make(store)
    store.add_command(n, "old", CommandKind.DEPLOY)
    store.set_command_status("old", CommandStatus.RUNNING, {"phase": "writing", "bytes": 5, "total": 9})
    store.add_command(n, "off", CommandKind.POWEROFF)
    store.set_command_status("off", CommandStatus.RUNNING)
    assert store.supersede_running(n.id, CommandKind.DEPLOY) == 1
    assert store.command("old")["status"] == CommandStatus.SUPERSEDED
    assert store.command("off")["status"] == CommandStatus.RUNNING, "only commands of that kind"
    assert store.last_command(n.id, CommandKind.DEPLOY, status=CommandStatus.RUNNING) is None
