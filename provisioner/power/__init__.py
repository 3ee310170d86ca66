"""Power drivers (IPMI, Redfish, fake) and the manager that throttles, retries and verifies."""

from __future__ import annotations

from ..config import Settings
from ..models import BmcCredentials, BmcDriver, BootDevice, BootMode, PowerState
from .base import PowerDriver
from .manager import PowerManager


class ByProtocol:
    """The real drivers, one per BMC protocol, each made on first use: a node's
    credentials say which one speaks to its BMC."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._drivers: dict[BmcDriver, PowerDriver] = {}

    def _driver(self, bmc: BmcCredentials) -> PowerDriver:
        if bmc.driver not in self._drivers:
            if bmc.driver == BmcDriver.REDFISH:
                from .redfish import RedfishPowerDriver
                self._drivers[bmc.driver] = RedfishPowerDriver(
                    timeout=self.settings.power_timeout, ca_bundle=self.settings.power_redfish_ca_bundle,
                    insecure=self.settings.power_redfish_insecure)
            else:
                from .ipmi import IpmiPowerDriver
                self._drivers[bmc.driver] = IpmiPowerDriver(timeout=self.settings.power_timeout)
        return self._drivers[bmc.driver]

    def get_power(self, bmc: BmcCredentials) -> PowerState:
        return self._driver(bmc).get_power(bmc)

    def set_power(self, bmc: BmcCredentials, state: PowerState) -> None:
        self._driver(bmc).set_power(bmc, state)

    def set_boot_device(self, bmc: BmcCredentials, device: BootDevice, mode: BootMode | None = None,
                        secure_boot: bool | None = None) -> None:
        self._driver(bmc).set_boot_device(bmc, device, mode, secure_boot)

    def get_secure_boot(self, bmc: BmcCredentials) -> bool | None:
        return self._driver(bmc).get_secure_boot(bmc)


def make_driver(settings: Settings) -> PowerDriver:
    """The driver the settings select."""
    if settings.power_driver == "fake":
        from .fake import FakePowerDriver
        return FakePowerDriver()
    return ByProtocol(settings)


__all__ = ["ByProtocol", "PowerDriver", "PowerManager", "make_driver"]
