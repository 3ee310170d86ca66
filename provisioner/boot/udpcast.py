"""udp-sender (Debian's udpcast), the daemon's multicast child: one process per session,
sending one image file to the receivers that joined it, read back from its own report.
The only module that knows udpcast's command line and its output.

udpcast is reliable multicast with a rendezvous: receivers join while the sender waits
(until `min_receivers` joined, or `max_wait` seconds after the first), then the sender
sends slice by slice and retransmits what any receiver reports missing. Nobody joins
once the data flows, and a receiver that stops answering is dropped after a few
unanswered requests. The sender dies with the daemon (`setpriv --pdeathsig`), and a
sender a killed daemon left anyway is found by its pid file and stopped at start."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Callable

from ..processes import stop_pids

LOG = logging.getLogger(__name__)
BLOCK = 1456  # udpcast's packet payload (its default and maximum block size)

_STATS = re.compile(r"bytes=\s*([\d ]+?)\s+re-xmits=\s*(\d+)")
_JOINED = re.compile(r"New connection from ([\d.]+)")
_DROPPED = re.compile(r"Dropping client #\d+ because")
_DISCONNECT = re.compile(r"Disconnecting #\d+ \(([\d.]+)\)")


class SenderState(StrEnum):
    WAITING = "waiting"  # rendezvous: receivers may join
    SENDING = "sending"  # data flows: nobody joins any more
    DONE = "done"  # ended: every receiver still in it has the whole file (if any is left)
    FAILED = "failed"  # ended without sending the file (no receiver, killed, an error)


@dataclass(frozen=True)
class SessionAddress:
    rendezvous: str  # the group receivers and sender find each other on
    data: str  # the group the data goes to
    portbase: int  # even; the session uses portbase and portbase + 1


@dataclass(frozen=True)
class SenderOptions:
    interface: str
    ttl: int
    min_receivers: int
    max_wait: float  # seconds from the first receiver's arrival
    max_bitrate: str  # udpcast's notation: 600m, 50000k
    start_timeout: float  # no receiver (or no start) in this long: give up
    retries_until_drop: int = 12  # ~3 s of silence (measured): a dead receiver holds the others that long


@dataclass
class SenderReport:
    """What the sender said about its session, parsed from its output."""

    state: SenderState = SenderState.WAITING
    joined: list[str] = field(default_factory=list)  # receivers' addresses, in order of arrival
    dropped: int = 0  # receivers the sender gave up on mid-session
    payload_bytes: int = 0  # of the file, sent at least once
    retransmitted_blocks: int = 0
    started_at: float | None = None  # when the data started to flow (monotonic)
    ended_at: float | None = None  # when the sender said the transfer was complete
    error: str = ""

    @property
    def retransmitted_bytes(self) -> int:
        return self.retransmitted_blocks * BLOCK

    @property
    def sending_seconds(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return round(self.ended_at - self.started_at, 1)

    @property
    def sent_bytes(self) -> int:
        """Payload on the wire: the file once, plus every retransmitted block."""
        return self.payload_bytes + self.retransmitted_bytes

    def read(self, line: str, clock: Callable[[], float] = time.monotonic) -> None:
        """Take one line of udp-sender's output into the report."""
        if (m := _JOINED.search(line)) and m.group(1) not in self.joined:
            self.joined.append(m.group(1))
        elif line.startswith("Starting transfer"):
            self.state, self.started_at = SenderState.SENDING, clock()
        elif m := _STATS.search(line):
            self.payload_bytes = int(m.group(1).replace(" ", ""))
            self.retransmitted_blocks = int(m.group(2))
        elif _DROPPED.search(line):
            self.dropped += 1
        elif line.startswith("Transfer complete"):
            self.state, self.ended_at = SenderState.DONE, clock()


def sender_command(executable: str, image: Path, address: SessionAddress, opts: SenderOptions) -> list[str]:
    return ["setpriv", "--pdeathsig", "KILL", "--", executable, "--file", str(image), "--nokbd",
            "--interface", opts.interface, "--portbase", str(address.portbase),
            "--mcast-rdv-address", address.rendezvous, "--mcast-data-address", address.data,
            "--ttl", str(opts.ttl), "--min-receivers", str(opts.min_receivers),
            "--max-wait", str(max(1, round(opts.max_wait))), "--max-bitrate", opts.max_bitrate,
            "--start-timeout", str(max(1, round(opts.start_timeout))),
            "--retries-until-drop", str(opts.retries_until_drop), "--stat-period", "1000", "--nopointopoint"]


def stale_senders(run_dir: Path, executable: str) -> list[int]:
    """Senders a previous daemon left running (pid files in run_dir whose process is still
    that program); their pid files are removed."""
    pids = []
    for pid_file in run_dir.glob("udp-sender-*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            cmdline, pid = [], 0
        if pid and pid != os.getpid() and any(Path(os.fsdecode(a)).name == Path(executable).name for a in cmdline):
            pids.append(pid)
        pid_file.unlink(missing_ok=True)
    return pids


class Sender:
    """One udp-sender process and its report; stop() leaves nothing running."""

    def __init__(self, name: str, command: list[str], run_dir: Path, log_file: Path,
                 on_change: Callable[["Sender"], None] = lambda s: None) -> None:
        self.name = name
        self.command = command
        self.pid_file = run_dir / f"udp-sender-{name}.pid"
        self.log_file = log_file
        self.on_change = on_change
        self.report = SenderReport()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE)
        except OSError as exc:
            self.report.state, self.report.error = SenderState.FAILED, f"cannot start udp-sender: {exc}"
            return
        self.pid_file.write_text(f"{self._proc.pid}\n")
        self._reader = threading.Thread(target=self._read, name=f"udp-sender-{self.name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        buffered = b""
        with self.log_file.open("ab") as log:
            while chunk := self._proc.stderr.read1(4096):  # type: ignore[attr-defined]
                log.write(chunk)
                buffered += chunk
                *lines, buffered = re.split(rb"[\r\n]", buffered)
                changed = False
                with self._lock:
                    for raw in lines:
                        before = (self.report.state, len(self.report.joined), self.report.dropped)
                        self.report.read(raw.decode(errors="replace").strip())
                        changed |= before != (self.report.state, len(self.report.joined), self.report.dropped)
                if changed:
                    self.on_change(self)
            log.flush()
        code = self._proc.wait()
        with self._lock:
            failed = self.report.state != SenderState.DONE
            if failed:
                self.report.state = SenderState.FAILED
                self.report.error = self.report.error or (
                    "no receiver joined in time" if not self.report.joined else f"udp-sender exited with {code}")
        self.pid_file.unlink(missing_ok=True)
        if failed:
            self.on_change(self)

    def wait(self, timeout: float | None = None) -> bool:
        """True once the sender has ended and its report is complete."""
        if self._reader is None:
            return True
        self._reader.join(timeout)
        return not self._reader.is_alive()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            stop_pids([self._proc.pid], grace=3.0)
        self.wait(5.0)
        self.pid_file.unlink(missing_ok=True)
