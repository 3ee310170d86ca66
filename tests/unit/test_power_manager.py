import pytest

from provisioner.errors import BmcAuthError, BmcUnreachable, PowerStateMismatch
from provisioner.models import BmcCredentials, BootDevice, PowerAction, PowerState
from provisioner.power.fake import FakePowerDriver
from provisioner.power.manager import PowerManager
from provisioner.secrets import Secret

BMC = BmcCredentials("10.0.0.1", 623, "admin", Secret("pw"), 3)


class Clock:
    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s

    def __call__(self):
        return self.now


class Flaky(FakePowerDriver):
    """Fails the first `failures` calls with `error`; optionally ignores power-on."""

    def __init__(self, failures=0, error=BmcUnreachable, stuck=False):
        super().__init__()
        self.failures, self.error, self.stuck = failures, error, stuck

    def get_power(self, bmc):
        if self.failures:
            self.failures -= 1
            raise self.error(bmc=bmc.endpoint)
        return super().get_power(bmc)

    def set_power(self, bmc, state):
        if not self.stuck:
            super().set_power(bmc, state)


def manager(driver, clock, **kw):
    return PowerManager(driver, min_interval=1.0, retries=3, backoff=1.0, verify_timeout=5.0,
                        sleep=clock.sleep, clock=clock, **kw)


def test_transient_errors_are_retried_with_backoff():
    clock = Clock()
    assert manager(Flaky(failures=2), clock).status(BMC) == PowerState.OFF
    backoffs = [s for s in clock.sleeps if s in (1.0, 2.0)]
    assert backoffs[:2] == [1.0, 2.0]


def test_retries_give_up_after_the_limit():
    with pytest.raises(BmcUnreachable):
        manager(Flaky(failures=10), Clock()).status(BMC)


def test_authentication_errors_are_never_retried():
    driver = Flaky(failures=10, error=BmcAuthError)
    with pytest.raises(BmcAuthError):
        manager(driver, Clock()).status(BMC)
    assert driver.failures == 9


def test_power_change_is_verified():
    clock = Clock()
    driver = FakePowerDriver()
    assert manager(driver, clock).apply(BMC, PowerAction.ON) == PowerState.ON
    with pytest.raises(PowerStateMismatch, match="still off"):
        manager(Flaky(stuck=True), clock).apply(BMC, PowerAction.ON)  # stuck at off
    stuck = Flaky(stuck=True)
    stuck.power[BMC.endpoint] = PowerState.ON
    with pytest.raises(PowerStateMismatch):
        manager(stuck, clock).apply(BMC, PowerAction.OFF)


def test_cycle_turns_a_running_machine_off_then_on():
    driver = FakePowerDriver()
    driver.power[BMC.endpoint] = PowerState.ON
    assert manager(driver, Clock()).apply(BMC, PowerAction.CYCLE) == PowerState.ON
    assert [c[2] for c in driver.calls if c[1] == "set_power"] == ["off", "on"]


def test_commands_to_one_bmc_keep_the_minimum_interval():
    clock = Clock()
    m = manager(FakePowerDriver(), clock)
    m.set_boot_device(BMC, BootDevice.NETWORK)
    m.status(BMC)
    assert clock.sleeps and clock.sleeps[0] == pytest.approx(1.0)
