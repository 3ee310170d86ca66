"""Redfish power over HTTPS with sushy; sushy's and requests' errors stop here.

Each command opens a Redfish session, does its work and deletes the session: a BMC has
few session slots, and an idle session only times out on its side. A BMC that refuses
sessions (no session service, as with sushy-tools' emulator) gets basic auth, and is
remembered as such, so the refusal is not asked for (and logged) at every command. TLS is verified by default, against
the system's CAs or the `power.redfish_ca_bundle` file; `power.redfish_insecure` turns
verification off, for labs only.

Vendor quirks live here. Some BMCs accept a one-time boot override and then do not keep
it (the override reads back as Disabled, or as another target): the driver reads the
override back and, if a one-time override did not stick, sets it as continuous. That is
safe here because the provisioner always sets the boot device again before the next
boot that matters (the disk, for good, once a deploy has written it).

Secure Boot is switched through the system's SecureBoot resource, with the boot override
it goes with, and read back: off for a maintenance boot (iPXE is not signed), on again
for the disk's signed chain. The firmware applies it at the power cycle that follows.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

import sushy
from sushy import exceptions as sushy_exc
from sushy.auth import BasicAuth, SessionOrBasicAuth

from ..errors import BmcAuthError, BmcProtocolError, BmcUnreachable, PowerError
from ..models import BmcCredentials, BootDevice, BootMode, PowerState

LOG = logging.getLogger(__name__)
T = TypeVar("T")

_TARGET = {BootDevice.NETWORK: sushy.BootSource.PXE, BootDevice.DISK: sushy.BootSource.HDD}
_MODE = {BootMode.UEFI: sushy.BootSourceOverrideMode.UEFI, BootMode.LEGACY: sushy.BootSourceOverrideMode.LEGACY}
_POWER = {sushy.PowerState.ON: PowerState.ON, sushy.PowerState.OFF: PowerState.OFF}


def _tls_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "certificate" in text or "ssl" in text or "tls" in text


class RedfishPowerDriver:
    """Power status/on/off and the boot override of one ComputerSystem over Redfish."""

    def __init__(self, timeout: float = 15.0, ca_bundle: str = "", insecure: bool = False) -> None:
        self.timeout = timeout
        self.verify: bool | str = False if insecure else (ca_bundle or True)
        self._basic_only: set[str] = set()  # BMCs that refused a session

    def _translate(self, bmc: BmcCredentials, exc: BaseException) -> PowerError:
        if isinstance(exc, sushy_exc.AccessError):
            return BmcAuthError(bmc=bmc.endpoint)
        if isinstance(exc, sushy_exc.ResourceNotFoundError):
            return BmcProtocolError(bmc=bmc.endpoint,
                                    detail=f"no system {bmc.system or '(the only one)'} at this BMC: {exc}")
        if isinstance(exc, sushy_exc.ConnectionError):
            if _tls_failure(exc):
                return BmcProtocolError(bmc=bmc.endpoint, detail=(
                    "its TLS certificate could not be verified: give its CA in power.redfish_ca_bundle "
                    "(power.redfish_insecure = true turns verification off, for labs only)"))
            return BmcUnreachable(bmc=bmc.endpoint)
        if isinstance(exc, sushy_exc.ServerSideError):
            error = BmcProtocolError(bmc=bmc.endpoint, detail=f"the BMC failed: {exc}")
            error.retryable = True
            return error
        if isinstance(exc, (sushy_exc.BadRequestError, sushy_exc.InvalidParameterValueError)):
            return BmcProtocolError(bmc=bmc.endpoint, detail=f"the BMC refused the request: {exc}")
        if isinstance(exc, sushy_exc.SushyError):
            return BmcProtocolError(bmc=bmc.endpoint, detail=str(exc))
        return BmcProtocolError(bmc=bmc.endpoint, detail=f"unexpected {type(exc).__name__}: {exc}")

    def _run(self, bmc: BmcCredentials, fn: Callable[[Any], T]) -> T:
        basic = bmc.endpoint in self._basic_only
        auth = (BasicAuth if basic else SessionOrBasicAuth)(username=bmc.username, password=bmc.password.reveal())
        try:
            try:
                # One attempt per call: the power manager retries, with its own backoff.
                # A BMC on the management network accepts a connection at once or not at all:
                # a short connect timeout keeps detection (Redfish first, then IPMI) quick.
                conn = sushy.Sushy(bmc.url, auth=auth, verify=self.verify, read_timeout=self.timeout,
                                   connect_timeout=min(self.timeout, 5.0), server_side_retries=1,
                                   server_side_retries_delay=0)
                if not basic and not auth.can_refresh_session():
                    LOG.info("BMC %s: no Redfish session service; using basic auth", bmc.endpoint)
                    self._basic_only.add(bmc.endpoint)
                return fn(conn.get_system(bmc.system))
            finally:
                _close(bmc, auth)
        except PowerError:
            raise
        except Exception as exc:  # sushy and requests raise many types; all end here
            raise self._translate(bmc, exc) from exc

    def get_power(self, bmc: BmcCredentials) -> PowerState:
        return self._run(bmc, lambda system: _POWER.get(system.power_state, PowerState.UNKNOWN))

    def set_power(self, bmc: BmcCredentials, state: PowerState) -> None:
        LOG.info("BMC %s: power %s", bmc.endpoint, state)
        reset = sushy.ResetType.ON if state == PowerState.ON else sushy.ResetType.FORCE_OFF
        self._run(bmc, lambda system: system.reset_system(reset))

    def get_secure_boot(self, bmc: BmcCredentials) -> bool | None:
        return self._run(bmc, _secure_boot_enabled)

    def set_boot_device(self, bmc: BmcCredentials, device: BootDevice, mode: BootMode | None = None,
                        secure_boot: bool | None = None) -> None:
        persist = device == BootDevice.DISK
        LOG.info("BMC %s: %s boot from %s%s", bmc.endpoint, "persistent" if persist else "one-time",
                 device, f" ({mode})" if mode else "")

        def change(system: Any) -> None:
            self._override(bmc, system, device, mode, persist)
            if secure_boot is not None:
                self._secure_boot(bmc, system, secure_boot)
        self._run(bmc, change)

    @staticmethod
    def _secure_boot(bmc: BmcCredentials, system: Any, wanted: bool) -> None:
        current = _secure_boot_enabled(system)
        if current is None:
            if wanted:
                raise BmcProtocolError(bmc=bmc.endpoint, detail="the BMC offers no Secure Boot setting")
            return
        if current == wanted:
            return
        LOG.info("BMC %s: Secure Boot %s", bmc.endpoint, "on" if wanted else "off")
        resource = system.secure_boot
        resource.set_enabled(wanted)
        resource.refresh()
        if bool(resource.enabled) != wanted:
            raise BmcProtocolError(bmc=bmc.endpoint, detail=(
                f"the BMC accepted Secure Boot {'on' if wanted else 'off'} but reads back "
                f"{'on' if resource.enabled else 'off'}"))

    def _override(self, bmc: BmcCredentials, system: Any, device: BootDevice, mode: BootMode | None,
                  persist: bool) -> None:
        target = _TARGET[device]
        wanted = sushy.BootSourceOverrideEnabled.CONTINUOUS if persist else sushy.BootSourceOverrideEnabled.ONCE
        # The mode only when it differs: on some BMCs a mode change is a firmware setting
        # (a settings job, even a reboot), and sushy-tools rewrites the domain's firmware.
        sushy_mode = _MODE[mode] if mode and system.boot.mode != _MODE[mode] else None
        system.set_system_boot_options(target=target, enabled=wanted, mode=sushy_mode)
        system.refresh()
        if system.boot.target == target and system.boot.enabled == wanted:
            return
        if not persist and system.boot.enabled != wanted:
            LOG.warning("BMC %s: the one-time boot override did not hold (%s, %s); setting it continuous",
                        bmc.endpoint, system.boot.enabled, system.boot.target)
            system.set_system_boot_options(target=target, enabled=sushy.BootSourceOverrideEnabled.CONTINUOUS,
                                           mode=sushy_mode)
            system.refresh()
            if system.boot.target == target:
                return
        raise BmcProtocolError(bmc=bmc.endpoint, detail=(
            f"the BMC accepted boot from {device} but reads back {system.boot.target} "
            f"({system.boot.enabled})"))


def _secure_boot_enabled(system: Any) -> bool | None:
    """The system's Secure Boot setting; None when it has no SecureBoot resource."""
    try:
        resource = system.secure_boot
    except (sushy_exc.MissingAttributeError, sushy_exc.ResourceNotFoundError):
        return None
    return None if resource.enabled is None else bool(resource.enabled)


def _close(bmc: BmcCredentials, auth: BasicAuth | SessionOrBasicAuth) -> None:
    try:
        auth.close()  # deletes the Redfish session, if one was opened
    except Exception as exc:  # the command's outcome stands; a leaked session only costs a slot
        LOG.debug("BMC %s: closing the Redfish session failed: %s", bmc.endpoint, exc)
