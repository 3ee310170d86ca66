"""The TFTP server (tftpy). It serves an allowlist only: the iPXE loaders from Debian's
ipxe package and the rendered hand-over script. No name outside the list can be read,
whatever its spelling, so path traversal has nothing to reach."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Callable

import tftpy

from .accesslog import AccessLog
from .counters import Counters

LOG = logging.getLogger(__name__)

LOADERS = ("undionly.kpxe", "ipxe.efi", "snponly.efi")
SCRIPT = "boot.ipxe"


class TftpService:
    def __init__(self, *, ipxe_dir: Path, empty_root: Path, render_script: Callable[[], str],
                 counters: Counters, access_log: AccessLog, listen: str = "0.0.0.0",
                 port: int = 69) -> None:
        self.ipxe_dir = ipxe_dir
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
        # tftpy logs every packet at INFO; keep its warnings only.
        logging.getLogger("tftpy").setLevel(logging.WARNING)

    def _new_server(self) -> tftpy.TftpServer:
        # tftpy 0.8.7 does not pass flock=False on to its transfers: each one still locks
        # and unlocks its file, so whatever _open returns must be a real file.
        return tftpy.TftpServer(str(self._root), dyn_file_func=self._open, flock=False)

    def _log(self, client: str, name: str, outcome: str) -> None:
        self._access_log.write(f"{client} RRQ {name} {outcome}")

    def _open(self, name: str, raddress: str = "", rport: int = 0) -> IO[bytes] | None:
        key = name.lstrip("/")
        if key == SCRIPT:
            self.counters.add(f"tftp:{SCRIPT}")
            self._log(raddress, name, "sent")
            LOG.info("tftp: %s to %s", SCRIPT, raddress)
            script = tempfile.TemporaryFile()  # a real file (see _new_server), gone once closed
            script.write(self._render_script().encode())
            script.seek(0)
            return script
        if key in LOADERS:
            path = self.ipxe_dir / key
            if path.is_file():
                self.counters.add(f"tftp:{key}")
                self._log(raddress, name, "sent")
                LOG.info("tftp: %s to %s", key, raddress)
                return path.open("rb")
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
        self._stopping.set()
        self._server.stop(now=True)
        if self._thread:
            self._thread.join(timeout=5)
