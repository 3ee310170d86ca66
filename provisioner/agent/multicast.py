"""Receiving an image over multicast: udp-receiver (udpcast) joins the session the deploy
command offers and writes the image to its stdout, in order; we append it to the .part
file as it comes, hashing it on the way like an HTTP download. Whatever stops the
session (a late join, a reboot of the sender, lost packets it gave up on, a daemon
killed) leaves a prefix of the image, synced, and the download goes on over HTTP from
there. The receiver is always gone before this returns: one source writes at a time."""

from __future__ import annotations

import fcntl
import logging
import select
import subprocess
from pathlib import Path
from typing import Callable

from .download import CHUNK, PartWriter
from .protocol import DeployMulticast

LOG = logging.getLogger("agent")
PIPE_SIZE = 1 << 20
WAIT_TICK = 3.0
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def interface_for(mac: str, sys_net: Path = Path("/sys/class/net")) -> str | None:
    """The interface with this MAC (the one the node booted from)."""
    for path in sorted(sys_net.iterdir()) if sys_net.is_dir() else []:
        try:
            if (path / "address").read_text().strip().lower() == mac.lower():
                return path.name
        except OSError:
            continue
    return None


def receiver_command(offer: DeployMulticast, interface: str, executable: str = "udp-receiver") -> list[str]:
    return [executable, "--nokbd", "--interface", interface, "--portbase", str(int(offer["portbase"])),
            "--mcast-rdv-address", str(offer["rendezvous"]),
            "--start-timeout", str(max(1, round(float(offer["start_timeout"])))),
            "--receive-timeout", str(max(1, round(float(offer["receive_timeout"])))),
            "--stat-period", "5000"]


def receive(offer: DeployMulticast, interface: str, writer: PartWriter, log: Path | None = None,
            command: list[str] | None = None, waiting: Callable[[], None] = lambda: None) -> int:
    """Append what the session delivers through the writer (never past the image's size);
    the bytes written. Never raises for a session that broke: the caller goes on from
    what arrived. `waiting` is called every WAIT_TICK seconds while no data has come yet
    (the session waits for its receivers): the daemon hears the node is alive."""
    cmd = command or receiver_command(offer, interface)
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
    err = log.open("ab") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    except OSError as exc:
        LOG.warning("agent: cannot run udp-receiver (%s): HTTP instead", exc)
        return 0
    finally:
        if log:
            err.close()  # type: ignore[union-attr]
    assert proc.stdout is not None
    try:
        fcntl.fcntl(proc.stdout.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # a smaller pipe only means more wake-ups
    start = writer.done
    try:
        while writer.done == start and not select.select([proc.stdout], [], [], WAIT_TICK)[0]:
            waiting()
        while writer.room and (chunk := proc.stdout.read1(CHUNK)):  # type: ignore[attr-defined]
            if len(chunk) > writer.room:
                LOG.warning("agent: the multicast session sent more than the image's %d bytes: dropped",
                            writer.size)
            writer.write(chunk)
    finally:
        if proc.poll() is None and writer.room:
            proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        writer.sync()
    LOG.info("agent: multicast session %s ended at byte %d of %d (udp-receiver exit %s)",
             offer.get("session", "?"), writer.done, writer.size, proc.returncode)
    return writer.done - start
