"""Secure Boot: the Redfish driver's switch and read-back against stand-in systems, IPMI's
refusal, and the host agent's reading of the firmware's SecureBoot variable."""

from pathlib import Path

import pytest

from provisioner.agent.host import EFI_GLOBAL, secure_boot
from provisioner.errors import BmcProtocolError
from provisioner.hardware import HostFacts
from provisioner.models import BmcCredentials, BmcDriver, BootDevice
from provisioner.power.ipmi import IpmiPowerDriver
from provisioner.power.redfish import RedfishPowerDriver
from provisioner.secrets import Secret

BMC = BmcCredentials("192.0.2.1", 443, "admin", Secret("x"), driver=BmcDriver.REDFISH)


class SecureBootResource:
    def __init__(self, enabled, keeps=True):
        self.enabled, self.keeps, self.sets = enabled, keeps, []

    def set_enabled(self, value):
        self.sets.append(value)
        if self.keeps:
            self.enabled = value

    def refresh(self):
        pass


class System:
    def __init__(self, resource):
        self.resource = resource

    @property
    def secure_boot(self):
        if self.resource is None:
            from sushy.exceptions import MissingAttributeError
            raise MissingAttributeError(attribute="SecureBoot", resource="/redfish/v1/Systems/1")
        return self.resource


def switch(system, wanted):
    RedfishPowerDriver()._secure_boot(BMC, system, wanted)


def test_secure_boot_is_switched_only_when_it_differs():
    resource = SecureBootResource(enabled=True)
    switch(System(resource), False)
    switch(System(resource), False)
    assert resource.sets == [False] and resource.enabled is False


def test_a_bmc_that_does_not_keep_secure_boot_is_an_error():
    with pytest.raises(BmcProtocolError, match="accepted Secure Boot on but reads back off"):
        switch(System(SecureBootResource(enabled=False, keeps=False)), True)


def test_a_bmc_without_a_secure_boot_setting():
    switch(System(None), False)  # nothing to switch off
    with pytest.raises(BmcProtocolError, match="offers no Secure Boot setting"):
        switch(System(None), True)


def test_ipmi_cannot_switch_secure_boot_on_and_says_so_before_any_packet():
    bmc = BmcCredentials("192.0.2.1", 623, "admin", Secret("x"))
    with pytest.raises(BmcProtocolError, match="cannot be switched over IPMI"):
        IpmiPowerDriver(timeout=0.1).set_boot_device(bmc, BootDevice.DISK, secure_boot=True)
    assert IpmiPowerDriver().get_secure_boot(bmc) is None


def test_the_host_agent_reads_secure_boot_from_efivars(tmp_path: Path):
    assert secure_boot(tmp_path) is None  # no /sys/firmware/efi: BIOS
    efivars = tmp_path / "sys/firmware/efi/efivars"
    efivars.mkdir(parents=True)
    assert secure_boot(tmp_path) is False  # UEFI, no variable
    var = efivars / f"SecureBoot-{EFI_GLOBAL}"
    var.write_bytes(b"\x06\x00\x00\x00\x01")
    assert secure_boot(tmp_path) is True
    var.write_bytes(b"\x06\x00\x00\x00\x00")
    assert secure_boot(tmp_path) is False


def test_host_facts_carry_secure_boot_only_as_a_boolean():
    assert HostFacts.parse({"secure_boot": True}).secure_boot is True
    assert HostFacts.parse({"secure_boot": "yes"}).secure_boot is None
    assert HostFacts.parse({}).secure_boot is None
