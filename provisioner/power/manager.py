"""Everything around a power command, written once for every driver: one command in
flight per BMC, a minimum interval between commands, retries with backoff for transient
errors (never for authentication), and verification that the power state changed."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

from ..errors import PowerError, PowerStateMismatch
from ..models import BmcCredentials, BootDevice, BootMode, PowerAction, PowerState
from .base import PowerDriver

LOG = logging.getLogger(__name__)
T = TypeVar("T")


class _BmcSlot:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_command = 0.0


class PowerManager:
    def __init__(self, driver: PowerDriver, *, min_interval: float = 1.0, retries: int = 3,
                 backoff: float = 1.0, verify_timeout: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.driver = driver
        self.min_interval = min_interval
        self.retries = retries
        self.backoff = backoff
        self.verify_timeout = verify_timeout
        self._sleep = sleep
        self._clock = clock
        self._slots: dict[tuple[str, int], _BmcSlot] = {}
        self._slots_lock = threading.Lock()
        # Told of each command sent: driver, command, seconds, and the kind of error (None: it worked).
        self.observe: Callable[[str, str, float, str | None], None] = lambda *told: None

    def _slot(self, bmc: BmcCredentials) -> _BmcSlot:
        with self._slots_lock:
            return self._slots.setdefault((bmc.address, bmc.port), _BmcSlot())

    def _timed(self, bmc: BmcCredentials, command: str, fn: Callable[[], T]) -> T:
        started = time.monotonic()
        error: str | None = None
        try:
            return fn()
        except PowerError as exc:
            error = type(exc).__name__
            raise
        finally:
            self.observe(bmc.driver.value, command, time.monotonic() - started, error)

    def _call(self, bmc: BmcCredentials, what: str, fn: Callable[[], T], command: str) -> T:
        """Run one BMC command under its lock and interval, retrying transient errors."""
        slot = self._slot(bmc)
        delay = self.backoff
        attempt = 0
        while True:
            attempt += 1
            with slot.lock:
                wait = slot.last_command + self.min_interval - self._clock()
                if wait > 0:
                    self._sleep(wait)
                try:
                    return self._timed(bmc, command, fn)
                except PowerError as exc:
                    if not exc.retryable or attempt > self.retries:
                        raise
                    LOG.warning("BMC %s: %s failed (attempt %d of %d), retrying in %.1fs: %s",
                                bmc.endpoint, what, attempt, self.retries + 1, delay, exc)
                finally:
                    slot.last_command = self._clock()
            self._sleep(delay)
            delay *= 2

    def probe(self, bmc: BmcCredentials) -> PowerState:
        """One status call without retries: proves address and credentials, fast."""
        slot = self._slot(bmc)
        with slot.lock:
            try:
                return self._timed(bmc, "get_power", lambda: self.driver.get_power(bmc))
            finally:
                slot.last_command = self._clock()

    def status(self, bmc: BmcCredentials) -> PowerState:
        return self._call(bmc, "power status", lambda: self.driver.get_power(bmc), "get_power")

    def set_boot_device(self, bmc: BmcCredentials, device: BootDevice, mode: BootMode | None = None,
                        secure_boot: bool | None = None) -> None:
        self._call(bmc, f"boot device {device}", lambda: self.driver.set_boot_device(bmc, device, mode, secure_boot),
                   "set_boot_device")

    def secure_boot(self, bmc: BmcCredentials) -> bool | None:
        return self._call(bmc, "Secure Boot state", lambda: self.driver.get_secure_boot(bmc), "get_secure_boot")

    def _set_and_verify(self, bmc: BmcCredentials, wanted: PowerState) -> PowerState:
        self._call(bmc, f"power {wanted}", lambda: self.driver.set_power(bmc, wanted), "set_power")
        deadline = self._clock() + self.verify_timeout
        while True:
            actual = self.status(bmc)
            if actual == wanted:
                return actual
            if self._clock() >= deadline:
                raise PowerStateMismatch(bmc=bmc.endpoint, wanted=wanted.value, actual=actual.value)
            self._sleep(0.5)

    def apply(self, bmc: BmcCredentials, action: PowerAction) -> PowerState:
        """Carry out `action` and return the verified power state afterwards."""
        if action == PowerAction.STATUS:
            return self.status(bmc)
        if action == PowerAction.ON:
            return self._set_and_verify(bmc, PowerState.ON)
        if action == PowerAction.OFF:
            return self._set_and_verify(bmc, PowerState.OFF)
        # cycle: off (if on), then on; both verified, so it works from either state.
        if self.status(bmc) != PowerState.OFF:
            self._set_and_verify(bmc, PowerState.OFF)
        return self._set_and_verify(bmc, PowerState.ON)
