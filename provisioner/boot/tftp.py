"""The TFTP server (tftpy). It serves an allowlist only: the iPXE loaders from Debian's
ipxe package and the rendered hand-over script. No name outside the list can be read,
whatever its spelling, so path traversal has nothing to reach. It is read-only, bounds
transfers per client and in all, and answers a malformed packet with an error packet."""

from __future__ import annotations

import importlib
import logging
import os
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Callable

import tftpy
from tftpy.TftpContexts import TftpContextServer

from .accesslog import AccessLog
from .counters import Counters

LOG = logging.getLogger(__name__)

LOADERS = ("undionly.kpxe", "ipxe.efi", "snponly.efi")
SCRIPT = "boot.ipxe"
MAX_REQUEST = 512  # RFC 1350: a request fits in one 512-byte packet
OP_RRQ, OP_WRQ, OP_ERROR = 1, 2, 5
ACCESS_VIOLATION, ILLEGAL_OPERATION = 2, 4


def error_packet(code: int, message: str) -> bytes:
    """An ERROR packet (RFC 1350, section 5): opcode, code, a netascii message, NUL."""
    return struct.pack("!HH", OP_ERROR, code) + message.encode("ascii", "replace") + b"\0"


class _GuardedContext(TftpContextServer):  # type: ignore[misc]
    """tftpy's server context, with its first packet checked before tftpy parses it, and
    any parse error after that turned into an error packet. tftpy lets struct.error,
    ValueError (a blksize that is not a number) and UnicodeDecodeError out of its
    parsing, and they end its listen loop, and with it every transfer in flight. A write
    request is refused here, before tftpy would create directories for it."""

    def _refuse(self, code: int, message: str) -> None:
        try:
            self.sock.sendto(error_packet(code, message), (self.host, self.port))
        except OSError:
            pass
        raise tftpy.TftpException(f"refused a request from {self.host}: {message}")

    def start(self, buffer: bytes) -> None:
        # tftpy sweeps its sessions for timeouts before it deletes refused ones, and a
        # session that never started has no packet to resend: its assert would end listen().
        self.last_update = time.time()
        opcode = struct.unpack("!H", buffer[:2])[0] if len(buffer) >= 2 else 0
        if opcode == OP_WRQ:
            self._refuse(ACCESS_VIOLATION, "read-only server: uploads are not accepted")
        if opcode != OP_RRQ or len(buffer) > MAX_REQUEST or not buffer.endswith(b"\0"):
            self._refuse(ILLEGAL_OPERATION, "malformed request")
        fields = buffer[2:-1].split(b"\0")
        # A name and a mode, then option/value pairs; every field ASCII and the name not empty.
        if len(fields) < 2 or len(fields) % 2 or not fields[0] or not all(f.isascii() for f in fields):
            self._refuse(ILLEGAL_OPERATION, "malformed request")
        try:
            super().start(buffer)
        except (struct.error, ValueError, IndexError, KeyError, TypeError) as exc:
            LOG.debug("tftp: malformed request from %s: %s", self.host, exc)
            self._refuse(ILLEGAL_OPERATION, "malformed request")

    def cycle(self) -> None:
        try:
            super().cycle()
        except (struct.error, ValueError, IndexError, KeyError, TypeError) as exc:
            LOG.debug("tftp: malformed packet from %s: %s", self.host, exc)
            self._refuse(ILLEGAL_OPERATION, "malformed packet")


# tftpy's listen() makes its contexts by this module-level name; there is no other hook.
# (The package re-exports the class TftpServer under the module's name: go by sys.modules.)
setattr(importlib.import_module("tftpy.TftpServer"), "TftpContextServer", _GuardedContext)


class _QuietWake(logging.Filter):
    """tftpy says it discards data on its port in graceful shutdown: only stop() does that."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Discarding data on main port")


class _QuietSizeProbe(logging.Filter):
    """UEFI PXE clients ask for a file's size (the tsize option), then end that transfer
    with error 8, "Failed to negotiate options", and ask again for the file itself. tftpy
    logs that first end as three errors; it is how every OVMF and most server firmware
    boot, not a fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("errorcode = 8" in text or "errorcode: 8" in text)


SIZE_PROBE_LOGGERS = ("tftpy.TftpPacketTypes", "tftpy.TftpStates", "tftpy.TftpServer")


class TftpService:
    def __init__(self, *, ipxe_dir: Path, empty_root: Path, render_script: Callable[[], str],
                 counters: Counters, access_log: AccessLog, listen: str = "0.0.0.0",
                 port: int = 69, max_transfers: int = 64, max_per_client: int = 4) -> None:
        self.ipxe_dir = ipxe_dir
        self.max_transfers = max_transfers
        self.max_per_client = max_per_client
        self.listen = listen
        self.port = port
        self.counters = counters
        self._render_script = render_script
        self._access_log = access_log
        empty_root.mkdir(parents=True, exist_ok=True)
        self._root = empty_root
        self._server = self._new_server()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # tftpy logs every packet at INFO; keep its warnings only (but the one for the
        # datagram stop() wakes it with).
        logging.getLogger("tftpy").setLevel(logging.WARNING)
        server_log = logging.getLogger("tftpy.TftpServer")  # a logger's filters see only its own records
        if not any(isinstance(f, _QuietWake) for f in server_log.filters):
            server_log.addFilter(_QuietWake())
        for name in SIZE_PROBE_LOGGERS:
            log = logging.getLogger(name)
            if not any(isinstance(f, _QuietSizeProbe) for f in log.filters):
                log.addFilter(_QuietSizeProbe())

    def _new_server(self) -> tftpy.TftpServer:
        # tftpy 0.8.7 does not pass flock=False on to its transfers: each one still locks
        # and unlocks its file, so whatever _open returns must be a real file.
        return tftpy.TftpServer(str(self._root), dyn_file_func=self._open, upload_open=self._refuse_upload,
                                flock=False)

    def _refuse_upload(self, path: str, context: object) -> None:
        """A second wall behind _GuardedContext: tftpy asks this before writing anything."""
        LOG.warning("tftp: refused an upload of %r: read-only server", path)
        return None

    def _busy(self, client: str) -> str | None:
        """Why a new transfer for `client` must wait, if it must (its session is counted)."""
        sessions = list(self._server.sessions.values())
        if len(sessions) > self.max_transfers:
            return f"{len(sessions) - 1} transfers under way (tftp.max_transfers)"
        mine = sum(1 for s in sessions if s.host == client)
        if mine > self.max_per_client:
            return f"{mine - 1} transfers under way for {client} (tftp.max_per_client)"
        return None

    def _log(self, client: str, name: str, outcome: str) -> None:
        self._access_log.write(f"{client} RRQ {name} {outcome}")

    def _open(self, name: str, raddress: str = "", rport: int = 0) -> IO[bytes] | None:
        key = name.lstrip("/")
        busy = self._busy(raddress)
        if busy is not None:
            self.counters.add("tftp:busy")
            self._log(raddress, name, "busy")
            LOG.warning("tftp: refused %r from %s: %s", name, raddress, busy)
            return None
        if key == SCRIPT:
            self.counters.add(f"tftp:{SCRIPT}")
            self._log(raddress, name, "sent")
            LOG.info("tftp: %s to %s", SCRIPT, raddress)
            script = tempfile.TemporaryFile()  # a real file (see _new_server), gone once closed
            script.write(self._render_script().encode())
            self.counters.add("bytes:tftp", script.tell())
            script.seek(0)
            return script
        if key in LOADERS:
            path = self.ipxe_dir / key
            if path.is_file():
                self.counters.add(f"tftp:{key}")
                self._log(raddress, name, "sent")
                LOG.info("tftp: %s to %s", key, raddress)
                handle = path.open("rb")
                self.counters.add("bytes:tftp", os.fstat(handle.fileno()).st_size)  # handed to the transfer
                return handle
            LOG.error("tftp: %s requested by %s but %s is missing (install Debian's ipxe)",
                      key, raddress, path)
        self.counters.add("tftp:refused")
        self._log(raddress, name, "refused")
        LOG.warning("tftp: refused %r from %s: not a boot file we serve", name, raddress)
        return None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="tftp", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        # tftpy runs every transfer in this one loop; an exception in any of them ends
        # listen(), so a failed transfer must not take the service down: start again.
        while not self._stopping.is_set():
            try:
                # A 2 s tick (5 retries, so a slow client still gets 10 s) lets stop()
                # take effect quickly: tftpy checks its shutdown flag once per tick.
                self._server.listen(self.listen, self.port, timeout=2, retries=5)
                return
            except Exception:
                if self._stopping.is_set():
                    return
                LOG.exception("tftp server on %s:%d failed; restarting it", self.listen, self.port)
                self.counters.add("tftp:restarts")
                self._server = self._new_server()
                self._stopping.wait(0.5)

    def wait_listening(self, timeout: float = 5.0) -> bool:
        """True once the socket is bound (tftpy binds inside listen())."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if getattr(self._server, "sock", None) is not None:
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Stop at once: tftpy looks at its shutdown flags only between two selects (a 2 s
        tick), so a datagram to its own port wakes it. In graceful mode it discards what
        arrives on its port; in immediate mode it then ends, open transfers and all."""
        self._stopping.set()
        self._server.stop(now=False)
        self._server.stop(now=True)
        self._wake()
        if self._thread:
            self._thread.join(timeout=5)

    def _wake(self) -> None:
        host = self.listen
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"\0", (host, self.port))
        except OSError as exc:  # not fatal: the tick ends it a moment later
            LOG.debug("tftp: could not wake the server to stop it: %s", exc)
