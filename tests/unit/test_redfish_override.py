"""The Redfish driver's boot override read-back, against stand-in systems that keep, drop
or change what they were told (the quirks real BMCs show)."""

import pytest
import sushy

from provisioner.errors import BmcProtocolError
from provisioner.models import BmcCredentials, BmcDriver, BootDevice, BootMode
from provisioner.power.redfish import RedfishPowerDriver
from provisioner.secrets import Secret

BMC = BmcCredentials("192.0.2.1", 443, "admin", Secret("x"), driver=BmcDriver.REDFISH)


class Boot:
    target = enabled = mode = None


class System:
    def __init__(self, keeps_once=True, target_override=None):
        self.boot, self.sets = Boot(), []
        self.keeps_once, self.target_override = keeps_once, target_override

    def set_system_boot_options(self, target=None, enabled=None, mode=None):
        self.sets.append((target, enabled, mode))
        self.boot.enabled = enabled if (self.keeps_once or enabled != sushy.BootSourceOverrideEnabled.ONCE) \
            else sushy.BootSourceOverrideEnabled.DISABLED
        self.boot.target, self.boot.mode = self.target_override or target, mode

    def refresh(self):
        pass


def override(system, device, mode=BootMode.UEFI):
    RedfishPowerDriver()._override(BMC, system, device, mode, device == BootDevice.DISK)


def test_a_one_time_override_that_holds_is_set_once():
    system = System()
    override(system, BootDevice.NETWORK)
    assert system.sets == [(sushy.BootSource.PXE, sushy.BootSourceOverrideEnabled.ONCE,
                            sushy.BootSourceOverrideMode.UEFI)]


def test_the_boot_mode_is_sent_only_when_it_differs():
    system = System()
    system.boot.mode = sushy.BootSourceOverrideMode.UEFI
    override(system, BootDevice.DISK)
    assert system.sets == [(sushy.BootSource.HDD, sushy.BootSourceOverrideEnabled.CONTINUOUS, None)]


def test_a_one_time_override_that_is_dropped_is_set_continuous():
    system = System(keeps_once=False)
    override(system, BootDevice.NETWORK, BootMode.LEGACY)
    assert [s[1] for s in system.sets] == [sushy.BootSourceOverrideEnabled.ONCE,
                                           sushy.BootSourceOverrideEnabled.CONTINUOUS]
    assert system.boot.target == sushy.BootSource.PXE


def test_a_bmc_that_reads_back_another_device_is_an_error():
    with pytest.raises(BmcProtocolError, match="accepted boot from disk but reads back"):
        override(System(target_override=sushy.BootSource.PXE), BootDevice.DISK)
