"""Planning a reimage: limits, upgrade-domain batches, and what is refused before any
node is touched."""

import pytest

from provisioner import config
from provisioner.errors import Conflict, InvalidInput, NotFound
from provisioner.images import Catalog
from provisioner.power.fake import FakePowerDriver
from provisioner.power.manager import PowerManager
from provisioner.secrets import SecretBox
from provisioner.store import Store
from provisioner.workflows.deploy import DeployFlow
from provisioner.workflows.engine import Conductor
from provisioner.workflows.jobs import JobRunner, parse_limit
from tests.unit.stores import new_store


@pytest.mark.parametrize("text,total,expected", [
    (None, 10, 7), ("", 10, 7), ("3", 10, 3), ("0", 10, 0), ("25%", 10, 2), ("100%", 10, 10),
    ("1%", 10, 1), (" 50% ", 3, 1), (4, 10, 4),
])
def test_parse_limit(text, total, expected):
    assert parse_limit(text, total, 7, "--max-unavailable") == expected


@pytest.mark.parametrize("text", ["-1", "abc", "150%", "%", "2.5", "-5%"])
def test_parse_limit_refuses_nonsense_naming_the_option(text):
    with pytest.raises(InvalidInput, match="--max-parallel must be a count"):
        parse_limit(text, 10, 1, "--max-parallel")


@pytest.fixture
def runner(tmp_path):
    settings = config.Settings(server_data_dir=tmp_path / "data", server_workers=4)
    store = new_store(tmp_path)
    conductor = Conductor(settings, store, PowerManager(FakePowerDriver(), min_interval=0),
                          SecretBox(tmp_path / "key"))
    catalog = Catalog(tmp_path / "images", store)
    jobs = JobRunner(conductor, DeployFlow(conductor, catalog), catalog)
    yield jobs
    store.close()


def add(runner, name, rack, state="ready", image=None):
    store = runner.conductor.store
    node = store.create_node(name=name, mac=f"52:54:00:00:{len(store.list_nodes()):02x}:01", rack=rack,
                             bmc_address="10.0.0.1", bmc_port=623, bmc_username="admin",
                             bmc_password_sealed="sealed", cipher_suite=3)
    with store._tx() as db:  # the state a real flow would have left
        db.execute("UPDATE nodes SET state = ? WHERE id = ?", (state, node.id))
    if image:
        store.update_node(node.id, image_sha256=image)
    return node


def names(plan):
    return [[n.name for n in batch] for batch in plan.batches]


def test_a_rack_is_split_by_upgrade_domain_then_by_max_unavailable(runner):
    for i in range(1, 7):
        add(runner, f"r1-n{i}", "rack-1")
    add(runner, "r2-n1", "rack-2")
    for n in runner.conductor.store.list_nodes():
        runner.conductor.store.update_node(n.id, image_sha256="a" * 64)
    plan = runner.plan("rollback", "rack-1", max_unavailable="2")
    # Two upgrade domains by default: alternate nodes by name; never more than 2 down.
    assert names(plan) == [["r1-n1", "r1-n3"], ["r1-n5"], ["r1-n2", "r1-n4"], ["r1-n6"]]
    assert plan.max_unavailable == 2 and plan.max_failures == 0 and plan.max_parallel == 4
    # The default: half the target down at once.
    assert names(runner.plan("rollback", "rack-1")) == [["r1-n1", "r1-n3", "r1-n5"], ["r1-n2", "r1-n4", "r1-n6"]]


def test_an_explicit_upgrade_domain_wins_and_all_spans_racks(runner):
    a = add(runner, "a", "rack-1", image="a" * 64)
    add(runner, "b", "rack-1", image="a" * 64)
    add(runner, "c", "rack-2", image="a" * 64)
    runner.conductor.store.update_node(a.id, upgrade_domain=1)
    plan = runner.plan("rollback", "all", max_unavailable="100%")
    # a is pinned to domain 1; b is index 1 in rack-1 (domain 1); c is index 0 in rack-2.
    assert names(plan) == [["c"], ["a", "b"]]


def test_refusals_before_anything_is_touched(runner):
    add(runner, "busy", "rack-1", state="inspecting")
    add(runner, "fresh", "rack-2")
    with pytest.raises(Conflict, match=r"busy \(inspecting\)"):
        runner.plan("reimage", "rack-1", "host")
    with pytest.raises(InvalidInput, match="say which image"):
        runner.plan("reimage", "fresh")
    with pytest.raises(NotFound):
        runner.plan("reimage", "fresh", "no-such-image")
    with pytest.raises(Conflict, match="never been deployed"):
        runner.plan("rollback", "fresh")
    with pytest.raises(Conflict, match="no previous image"):
        runner.plan("rollback", "fresh", to_previous=True)
    with pytest.raises(NotFound, match="no node, rack or tag"):
        runner.plan("reimage", "rack-9", "host")
    assert runner.conductor.store.jobs() == []
