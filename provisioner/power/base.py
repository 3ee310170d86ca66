"""The power driver interface: what every BMC protocol adapter implements."""

from __future__ import annotations

from typing import Protocol

from ..models import BmcCredentials, BootDevice, BootMode, PowerState


class PowerDriver(Protocol):
    """One BMC protocol. Methods raise only provisioner.errors.PowerError subclasses."""

    def get_power(self, bmc: BmcCredentials) -> PowerState: ...

    def set_power(self, bmc: BmcCredentials, state: PowerState) -> None: ...

    def set_boot_device(self, bmc: BmcCredentials, device: BootDevice, mode: BootMode | None = None,
                        secure_boot: bool | None = None) -> None:
        """Boot from the network on the next boot only; from the disk from now on. `mode`
        names the firmware's boot mode in the override (None: leave it as the BMC has it);
        `secure_boot` the UEFI Secure Boot state that boot needs (None: leave it)."""
        ...

    def get_secure_boot(self, bmc: BmcCredentials) -> bool | None:
        """Whether the system's firmware enforces Secure Boot (None: the BMC cannot say)."""
        ...
