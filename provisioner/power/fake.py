"""A fake power driver kept in memory, selectable with power.driver = "fake"."""

from __future__ import annotations

import threading

from ..errors import BmcAuthError, BmcUnreachable
from ..models import BmcCredentials, BmcDriver, BootDevice, BootMode, PowerState


class FakePowerDriver:
    """Machines appear on first use, powered off. A password of "wrong" is refused and
    an address starting with "unreachable" never answers, so error paths can be driven.
    Only addresses starting with "redfish" answer Redfish, so enrollment's detection
    (Redfish first, then IPMI) finds IPMI for every other one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.power: dict[str, PowerState] = {}
        self.boot_device: dict[str, BootDevice] = {}
        self.secure_boot: dict[str, bool] = {}  # by endpoint; unset: the BMC cannot say
        self.calls: list[tuple[str, str, str]] = []

    def _check(self, bmc: BmcCredentials, call: str, arg: str = "") -> None:
        self.calls.append((bmc.endpoint, call, arg))
        if bmc.address.startswith("unreachable"):
            raise BmcUnreachable(bmc=bmc.endpoint)
        if bmc.driver == BmcDriver.REDFISH and not bmc.address.startswith("redfish"):
            raise BmcUnreachable(bmc=bmc.endpoint)
        if bmc.password.reveal() == "wrong":
            raise BmcAuthError(bmc=bmc.endpoint)

    def get_power(self, bmc: BmcCredentials) -> PowerState:
        with self._lock:
            self._check(bmc, "get_power")
            return self.power.get(bmc.endpoint, PowerState.OFF)

    def set_power(self, bmc: BmcCredentials, state: PowerState) -> None:
        with self._lock:
            self._check(bmc, "set_power", state.value)
            self.power[bmc.endpoint] = state

    def set_boot_device(self, bmc: BmcCredentials, device: BootDevice, mode: BootMode | None = None,
                        secure_boot: bool | None = None) -> None:
        with self._lock:
            self._check(bmc, "set_boot_device", device.value)
            self.boot_device[bmc.endpoint] = device
            if secure_boot is not None:
                self.secure_boot[bmc.endpoint] = secure_boot

    def get_secure_boot(self, bmc: BmcCredentials) -> bool | None:
        with self._lock:  # not a call tests count: enrollment asks it once, quietly
            return self.secure_boot.get(bmc.endpoint)
