"""Host health from two signals, fencing before healing: the verdict (pure), and the host
watch over a real store with a fake BMC, a fake load balancer's view and a fake healer.
A host is fenced only when both signals agree, and healed only once fenced; a BMC that
does not answer, or lies about powering off, keeps the guests where they are."""

import time

import pytest

from provisioner import config
from provisioner.errors import InvalidInput
from provisioner.models import PowerState
from provisioner.network.haproxy import Health
from provisioner.power.fake import FakePowerDriver
from provisioner.power.manager import PowerManager
from provisioner.secrets import Secret, SecretBox
from provisioner.states import DEPLOYABLE, Event, State, next_state
from provisioner.statuses import GuestState
from provisioner.store import Store
from provisioner.workflows.engine import Conductor
from provisioner.workflows.hosthealth import HostWatch, Verdict, judge
from tests.unit.stores import new_store


@pytest.mark.parametrize("power,error,guests,verdict,words", [
    (PowerState.OFF, None, [], Verdict.DEAD, "its BMC says the power is off"),
    (PowerState.OFF, None, [Health.UP], Verdict.DEAD, "power is off"),
    (PowerState.ON, None, [Health.DOWN, Health.DOWN], Verdict.DEAD, "all 2 of its guests in an endpoint fail"),
    (PowerState.ON, None, [Health.DOWN, Health.UP], Verdict.SUSPECT, "1 of its 2 guests in an endpoint pass"),
    (PowerState.ON, None, [], Verdict.SUSPECT, "no guest health check says otherwise"),
    (PowerState.UNKNOWN, None, [Health.UP], Verdict.SUSPECT, "not fenced on one signal"),
    (None, "BMC 10.0.0.1:623 is unreachable", [Health.DOWN], Verdict.UNCONFIRMED, "its guests are NOT moved"),
])
def test_a_host_is_dead_only_when_two_signals_agree(power, error, guests, verdict, words):
    judged = judge(42.4, power, error, guests)
    assert judged.verdict == verdict and words in judged.reason, judged
    assert judged.reason.startswith("its host agent has been silent for 42s")


def test_out_for_repair_comes_back_only_through_a_deploy_or_an_inspection():
    assert next_state(State.ACTIVE, Event.FENCE) == State.OUT_FOR_REPAIR
    assert State.OUT_FOR_REPAIR in DEPLOYABLE
    assert next_state(State.OUT_FOR_REPAIR, Event.DONE) is None
    assert next_state(State.READY, Event.FENCE) is None, "only a running host is fenced"


class LyingDriver(FakePowerDriver):
    """Says yes to power off, and stays on."""

    def set_power(self, bmc, state):
        self._check(bmc, "set_power", state.value)


class FakeEndpoints:
    def __init__(self, health):
        self._health = health
        self.drained: list[tuple[str, bool]] = []

    def health(self, guests):
        return list(self._health) if guests else []

    def drain(self, name, wait=True):
        self.drained.append((name, wait))


class FakeGuests:
    def __init__(self):
        self.healed: list[str] = []

    def heal(self, host):
        self.healed.append(host)
        return None


@pytest.fixture
def lab(tmp_path):
    def make(driver=None, health=(Health.UP,), address="10.0.0.1", guests=True):
        settings = config.Settings(server_data_dir=tmp_path / "data", healing_retry_interval=30)
        store = new_store(tmp_path)
        box = SecretBox(tmp_path / "key")
        driver = driver or FakePowerDriver()
        power = PowerManager(driver, min_interval=0, retries=0, verify_timeout=0, sleep=lambda s: None)
        conductor = Conductor(settings, store, power, box)
        node = store.create_node(name="host-1", mac="52:54:00:00:00:01", rack="rack-1", bmc_address=address,
                                 bmc_port=623, bmc_username="admin", bmc_password_sealed=box.seal(Secret("pw")),
                                 cipher_suite=3)
        with store._tx() as db:  # an active host whose agent went silent a minute ago
            db.execute("UPDATE nodes SET state = 'active' WHERE id = ?", (node.id,))
        store.update_node(node.id, host_last_seen=time.time() - 60, host_lost=1)
        if guests:
            with store._tx() as db:
                db.execute("INSERT INTO guests (name, role, idx, host, cores, memory_mib, upgrade_domain, state, "
                           "serving, created_at, updated_at) VALUES ('web-1', 'web', 1, 'host-1', '[1]', 256, 0, "
                           "'ready', 1, 0, 0)")
        endpoints, healer = FakeEndpoints(health), FakeGuests()
        watch = HostWatch(conductor, healer, endpoints)
        made.append(store)
        return watch, store, driver, endpoints, healer

    made: list[Store] = []
    yield make
    for store in made:
        store.close()


def _events(store, kind):
    return [e["message"] for e in store.events(store.get_node("host-1")) if e["event"] == kind]


def test_a_host_whose_bmc_says_off_is_fenced_then_its_guests_healed(lab):
    watch, store, driver, endpoints, healer = lab()
    watch.sweep()
    node = store.get_node("host-1")
    assert node.state == State.OUT_FOR_REPAIR and "its BMC says the power is off" in node.last_error
    assert ("10.0.0.1:623", "set_power", "off") in driver.calls, "powered off through its BMC, even if off"
    fence = _events(store, "fence")  # the watch's record, then the state change's
    assert fence[0] == "fenced: powered off through its BMC (IPMI 10.0.0.1:623) and verified off"
    assert fence[1].startswith("declared dead at ") and fence[1].endswith("Reimage it to bring it back")
    assert store.guest("web-1")["state"] == GuestState.LOST and endpoints.drained == [("web-1", False)]
    assert healer.healed == ["host-1"], "healed once fenced, not before"
    watch.sweep()  # out for repair with its guest still on it: healing is tried again later, not at once
    assert healer.healed == ["host-1"]


def test_a_host_that_hangs_with_every_guest_failing_is_fenced(lab):
    driver = FakePowerDriver()
    driver.power["10.0.0.1:623"] = PowerState.ON
    watch, store, driver, _, healer = lab(driver=driver, health=(Health.DOWN,))
    watch.sweep()
    assert store.get_node("host-1").state == State.OUT_FOR_REPAIR
    assert driver.power["10.0.0.1:623"] == PowerState.OFF and healer.healed == ["host-1"]


def test_a_silent_agent_alone_is_recorded_once_and_nothing_more(lab):
    driver = FakePowerDriver()
    driver.power["10.0.0.1:623"] = PowerState.ON
    watch, store, driver, endpoints, healer = lab(driver=driver, health=(Health.UP,))
    watch.sweep()
    watch.sweep()
    said = _events(store, "health")
    assert len(said) == 1 and said[0].startswith("suspect: ") and "not fenced on one signal" in said[0]
    assert store.get_node("host-1").state == State.ACTIVE and driver.power["10.0.0.1:623"] == PowerState.ON
    assert not any(c[1] == "set_power" for c in driver.calls) and healer.healed == [] and endpoints.drained == []
    store.update_node(store.get_node("host-1").id, host_lost=0, host_last_seen=time.time())
    watch.sweep()
    assert _events(store, "health")[-1] == "host agent heard again: the host is alive"


def test_a_bmc_that_does_not_answer_keeps_the_guests_where_they_are(lab):
    watch, store, driver, endpoints, healer = lab(address="unreachable-bmc")
    watch.sweep()
    said = _events(store, "health")
    assert len(said) == 1 and said[0].startswith("unconfirmed: ") and "its guests are NOT moved" in said[0]
    assert store.get_node("host-1").state == State.ACTIVE and store.guest("web-1")["state"] == GuestState.READY
    assert healer.healed == [] and endpoints.drained == []


def test_a_bmc_that_lies_about_powering_off_is_not_trusted(lab):
    watch, store, driver, endpoints, healer = lab(driver=LyingDriver(), health=(Health.DOWN,))
    driver.power["10.0.0.1:623"] = PowerState.ON
    watch.sweep()
    fence = _events(store, "fence")
    assert len(fence) == 1 and fence[0].startswith("CANNOT FENCE: ") and "its guests are NOT moved" in fence[0]
    assert store.get_node("host-1").state == State.ACTIVE and store.guest("web-1")["state"] == GuestState.READY
    assert healer.healed == [] and endpoints.drained == []


def test_a_silent_host_without_guests_is_only_marked_lost(lab):
    watch, store, driver, _, healer = lab(guests=False)
    watch.sweep()
    assert store.get_node("host-1").state == State.ACTIVE and driver.calls == [] and healer.healed == []


def test_a_failure_that_repeats_is_recorded_once(lab):
    class NoRoom(FakeGuests):
        def heal(self, host):
            self.healed.append(host)
            raise InvalidInput("role web: no room for web-1 (short by 1 core)")

    watch, store, driver, _, _ = lab()
    watch.guests = NoRoom()
    watch.sweep()  # fenced, then the heal fails
    watch._next_try.clear()  # as if healing.retry_interval had passed, twice
    watch.sweep()
    watch._next_try.clear()
    watch.sweep()
    assert watch.guests.healed == ["host-1"] * 3
    said = _events(store, "heal")
    assert len(said) == 1 and "its guests cannot be placed again now: role web: no room for web-1" in said[0]
    assert "short by 1 core" in store.guest("web-1")["last_error"]
