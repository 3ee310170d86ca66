"""Power drivers (IPMI, fake) and the manager that throttles, retries and verifies."""

from __future__ import annotations

from ..config import Settings
from .base import PowerDriver
from .manager import PowerManager


def make_driver(settings: Settings) -> PowerDriver:
    """The driver the settings select."""
    if settings.power_driver == "fake":
        from .fake import FakePowerDriver
        return FakePowerDriver()
    from .ipmi import IpmiPowerDriver
    return IpmiPowerDriver(timeout=settings.power_timeout)


__all__ = ["PowerDriver", "PowerManager", "make_driver"]
