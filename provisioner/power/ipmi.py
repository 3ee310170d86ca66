"""IPMI power over the network with pyghmi; pyghmi's errors stop here.

Cipher suites: pyghmi's client always proposes suite 17 (RAKP-HMAC-SHA256) first. Some
BMCs, virtualbmc 3.3 among them, answer the open-session request as if suite 3
(RAKP-HMAC-SHA1) had been agreed without saying so; pyghmi then fails in RAKP2 with a
struct.error (32 bytes expected, 20 received). So the suite is a per-node setting: for
suite 3 we open the session proposing SHA-1 from the start, and a suite mismatch is
reported as such instead of as a crash.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from typing import Any, Callable, TypeVar

from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi import command as ipmi_command
from pyghmi.ipmi.private import session as ipmi_session

from ..errors import BmcAuthError, BmcProtocolError, BmcUnreachable, PowerError
from ..models import BmcCredentials, BootDevice, BootMode, PowerState

LOG = logging.getLogger(__name__)
T = TypeVar("T")

# pyghmi's own word for a hash it proposes: 256 means SHA-256 (suite 17), 1 SHA-1 (suite 3).
_HASH_FOR_SUITE = {17: 256, 3: 1}

_AUTH_MARKERS = ("incorrect password", "unauthorized name", "unauthorized role",
                 "invalid username", "insufficient privilege")
_UNREACHABLE_MARKERS = ("timeout", "session failed to initialize", "no longer connected",
                        "unable to transmit", "connection refused")


class _Sha1Session(ipmi_session.Session):  # type: ignore[misc]  # pyghmi is untyped
    """A pyghmi session that proposes cipher suite 3 (SHA-1) instead of starting at 17."""

    def _initsession(self) -> None:
        super()._initsession()
        self.attemptedhash = 1


class _Command(ipmi_command.Command):  # type: ignore[misc]  # pyghmi is untyped
    """pyghmi's Command built on a session class chosen by cipher suite."""

    def __init__(self, bmc: BmcCredentials, session_cls: type[ipmi_session.Session]) -> None:
        # Mirrors the synchronous branch of Command.__init__, with our session class.
        self.onlogon = None
        self.bmc = bmc.address
        self._sdrcachedir = None
        self._sdr = None
        self._oem = None
        self._oemknown = False
        self._netchannel = None
        self._ipv6support = None
        self.certverify = None
        self.kwargs: dict[str, Any] = {}
        # Credentials go in as bytes: pyghmi registers a logging-in session under the
        # credentials it was given but removes it under their bytes form, so with str
        # credentials the second command to a BMC finds the stale entry and waits forever.
        self.ipmi_session = session_cls(bmc=bmc.address, userid=bmc.username.encode(),
                                        password=bmc.password.reveal().encode(), port=bmc.port)


class IpmiPowerDriver:
    """Power status/on/off and one-time boot device over IPMI 2.0 (lanplus)."""

    def __init__(self, timeout: float = 15.0) -> None:
        self.timeout = timeout
        # pyghmi keeps module-level session tables; serialize logins to keep them sane.
        self._login_lock = threading.Lock()

    def _translate(self, bmc: BmcCredentials, exc: BaseException) -> PowerError:
        text = str(exc).lower()
        if text == "none":  # pyghmi reports a login that never got an answer as None
            text = ""
        if isinstance(exc, struct.error) or "rakp" in text and "pack" in text:
            other = 3 if bmc.cipher_suite == 17 else 17
            return BmcProtocolError(
                bmc=bmc.endpoint,
                detail=f"session setup failed with IPMI cipher suite {bmc.cipher_suite}; "
                       f"this BMC may only speak suite {other}: set the node's cipher suite "
                       f"to {other}")
        if any(m in text for m in _AUTH_MARKERS):
            return BmcAuthError(bmc=bmc.endpoint)
        if isinstance(exc, (socket.gaierror,)):
            return BmcProtocolError(bmc=bmc.endpoint, detail=f"cannot resolve address: {exc}")
        if isinstance(exc, (OSError, pyghmi_exc.IpmiException)) and (
                not text or any(m in text for m in _UNREACHABLE_MARKERS)):
            return BmcUnreachable(bmc=bmc.endpoint)
        if isinstance(exc, pyghmi_exc.IpmiException):
            return BmcProtocolError(bmc=bmc.endpoint, detail=str(exc))
        return BmcProtocolError(bmc=bmc.endpoint, detail=f"unexpected {type(exc).__name__}: {exc}")

    def _run(self, bmc: BmcCredentials, fn: Callable[[_Command], T]) -> T:
        session_cls = _Sha1Session if _HASH_FOR_SUITE.get(bmc.cipher_suite) == 1 else ipmi_session.Session
        try:
            with self._login_lock:
                cmd = _Command(bmc, session_cls)
            try:
                return fn(cmd)
            finally:
                self._logout(bmc, cmd)
        except PowerError:
            raise
        except Exception as exc:  # pyghmi raises many types; all end here
            raise self._translate(bmc, exc) from exc

    @staticmethod
    def _logout(bmc: BmcCredentials, cmd: _Command) -> None:
        """Close the command's session. A BMC has few session slots (often four), and
        pyghmi would otherwise keep the session alive from a thread of its own; virtualbmc
        even restarts (about 2.5 s) on a keepalive for a session it has already dropped."""
        session = cmd.ipmi_session
        if not getattr(session, "logged", False):
            return
        try:
            session.logout()
        except Exception as exc:  # the command's outcome stands; a lost logout only costs a slot
            LOG.debug("BMC %s: closing the IPMI session failed: %s", bmc.endpoint, exc)

    def get_power(self, bmc: BmcCredentials) -> PowerState:
        result = self._run(bmc, lambda c: c.get_power())
        value = str(result.get("powerstate", "")).lower()
        return PowerState(value) if value in ("on", "off") else PowerState.UNKNOWN

    def set_power(self, bmc: BmcCredentials, state: PowerState) -> None:
        LOG.info("BMC %s: power %s", bmc.endpoint, state)
        self._run(bmc, lambda c: c.set_power(state.value, wait=False))

    def get_secure_boot(self, bmc: BmcCredentials) -> bool | None:
        return None  # IPMI has no word for it

    def set_boot_device(self, bmc: BmcCredentials, device: BootDevice, mode: BootMode | None = None,
                        secure_boot: bool | None = None) -> None:
        if secure_boot:
            raise BmcProtocolError(bmc=bmc.endpoint, detail=(
                "Secure Boot cannot be switched over IPMI: this node needs a Redfish BMC"))
        # The network once (a failed maintenance boot falls back to the disk); the disk
        # for good, so a deployed host reboots into itself with the provisioner away.
        persist = device == BootDevice.DISK
        LOG.info("BMC %s: %s boot from %s%s", bmc.endpoint, "persistent" if persist else "one-time", device,
                 f" ({mode})" if mode else "")
        target = "network" if device == BootDevice.NETWORK else "hd"
        uefi = mode == BootMode.UEFI  # the boot flags' "EFI boot" bit; clear means legacy (or unknown)
        self._run(bmc, lambda c: c.set_bootdev(target, persist=persist, uefiboot=uefi))
