"""Multicast with repair, on real udpcast in network namespaces: the daemon's sender
(boot/udpcast.py) and the agent's receiver (agent/multicast.py) on a bridge of their own;
what a receiver misses comes over HTTP with a Range request, and a file that fails its
checksum is fetched whole again. Nothing is left running or configured afterwards."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from provisioner.agent import multicast
from provisioner.agent.download import PartWriter, fetch
from provisioner.boot.udpcast import Sender, SenderOptions, SenderState, SessionAddress, sender_command, stale_senders
from provisioner.processes import pid_alive

from .test_downloads import FlakyServer

ADDRESS = SessionAddress(rendezvous="239.255.61.1", data="239.255.61.2", portbase=9400)
OFFER = {"session": "test", "rendezvous": ADDRESS.rendezvous, "portbase": ADDRESS.portbase,
         "start_timeout": 20.0, "receive_timeout": 3.0}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Segment:
    """A bridge in the sender's namespace and one namespace per receiver, on 10.77.0.0/24."""

    def __init__(self, receivers: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.sender_ns = f"pvmc-{tag}-s"
        self.receiver_ns = [f"pvmc-{tag}-r{i}" for i in range(receivers)]
        _ip("netns", "add", self.sender_ns)
        _ip("-n", self.sender_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.sender_ns, "addr", "add", "10.77.0.1/24", "dev", "br0")
        _ip("-n", self.sender_ns, "link", "set", "br0", "up")
        for i, ns in enumerate(self.receiver_ns):
            _ip("netns", "add", ns)
            _ip("link", "add", f"pvmc{tag}{i}", "netns", self.sender_ns, "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", self.sender_ns, "link", "set", f"pvmc{tag}{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"10.77.0.{10 + i}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def receiver(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.receiver_ns[i], *multicast.receiver_command(OFFER, "eth0")]

    def sender(self, image: Path, receivers: int, bitrate: str = "400m") -> list[str]:
        opts = SenderOptions(interface="br0", ttl=1, min_receivers=receivers, max_wait=10, max_bitrate=bitrate,
                             start_timeout=30, retries_until_drop=5)
        return ["ip", "netns", "exec", self.sender_ns, *sender_command("udp-sender", image, ADDRESS, opts)]

    def close(self) -> None:
        for ns in [*self.receiver_ns, self.sender_ns]:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-9", pid], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def segment():
    seg = Segment(receivers=2)
    yield seg
    seg.close()


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "image.raw"
    path.write_bytes(os.urandom(12 << 20))
    return path


class Sink:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.digest.update(chunk)


def _receive(seg: Segment, i: int, out_path: Path, size: int) -> tuple[int, str]:
    sink = Sink()
    with out_path.open("ab") as out:
        writer = PartWriter(out, sink, 0, size, lambda done, total, path: None, "multicast")
        got = multicast.receive(OFFER, "eth0", writer, command=seg.receiver(i))
    return got, sink.digest.hexdigest()


def _in_thread(fn, *args):
    import threading
    box: dict[str, object] = {}
    thread = threading.Thread(target=lambda: box.update(value=fn(*args)))
    thread.start()
    return thread, box


def test_one_send_reaches_every_receiver_whole(segment, image, tmp_path):
    size = image.stat().st_size
    sender = Sender("whole", segment.sender(image, 2), tmp_path / "run", tmp_path / "sender.log")
    receivers = [_in_thread(_receive, segment, i, tmp_path / f"r{i}.part", size) for i in range(2)]
    time.sleep(0.3)
    sender.start()
    for thread, _ in receivers:
        thread.join(60)
    assert sender.wait(30)
    want = hashlib.sha256(image.read_bytes()).hexdigest()
    assert [box["value"] for _, box in receivers] == [(size, want), (size, want)]
    report = sender.report
    assert report.state == SenderState.DONE and sorted(report.joined) == ["10.77.0.10", "10.77.0.11"]
    assert report.payload_bytes == size and report.sent_bytes <= 1.1 * size
    assert not (tmp_path / "run" / "udp-sender-whole.pid").exists()


def test_a_receiver_that_dies_is_dropped_and_the_others_finish(segment, image, tmp_path):
    """A node powered off mid-session: the sender drops it and finishes with the rest;
    what it had written is an exact prefix of the image (HTTP takes it from there)."""
    size = image.stat().st_size
    sender = Sender("drop", segment.sender(image, 2, bitrate="30m"), tmp_path / "run", tmp_path / "sender.log")
    survivor = _in_thread(_receive, segment, 0, tmp_path / "r0.part", size)
    victim = _in_thread(_receive, segment, 1, tmp_path / "r1.part", size)
    time.sleep(0.3)
    sender.start()
    deadline = time.monotonic() + 20
    while (tmp_path / "r1.part").stat().st_size < (2 << 20) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in subprocess.run(["ip", "netns", "pids", segment.receiver_ns[1]], capture_output=True,
                              text=True).stdout.split():
        os.kill(int(pid), 9)
    for thread, _ in (survivor, victim):
        thread.join(60)
    assert sender.wait(60)
    payload = image.read_bytes()
    got, digest = victim[1]["value"]
    assert 0 < got < size and (tmp_path / "r1.part").read_bytes() == payload[:got]
    assert survivor[1]["value"] == (size, hashlib.sha256(payload).hexdigest())
    assert sender.report.state == SenderState.DONE and sender.report.dropped == 1


def test_receivers_outlive_a_killed_sender_and_http_repairs_the_rest(segment, image, tmp_path):
    """The daemon killed -9 mid-session: its sender dies with it (no stray sender), each
    receiver gives up after its receive timeout, and the download resumes over HTTP from
    the byte the session reached, never from two sources at once."""
    payload = image.read_bytes()
    size = len(payload)
    server = FlakyServer(payload)
    server.cut = False
    try:
        sender = Sender("killed", segment.sender(image, 1, bitrate="30m"), tmp_path / "run", tmp_path / "s.log")
        dest = tmp_path / "base.raw"

        def via_multicast(writer):
            return multicast.receive(OFFER, "eth0", writer, command=segment.receiver(0))

        got = _in_thread(lambda: fetch(server.url, dest, sha256=hashlib.sha256(payload).hexdigest(), size=size,
                                       token=None, multicast=via_multicast, sleep=lambda s: None))
        time.sleep(0.3)
        sender.start()
        part = tmp_path / "base.raw.part"
        deadline = time.monotonic() + 20
        while (not part.exists() or part.stat().st_size < (2 << 20)) and time.monotonic() < deadline:
            time.sleep(0.1)
        pid = int((tmp_path / "run" / "udp-sender-killed.pid").read_text())
        # A daemon killed with -9 leaves its pid file; the next start finds and stops it.
        assert stale_senders(tmp_path / "run", "udp-sender") == [pid]
        os.kill(pid, 9)
        got[0].join(60)
        transfer = got[1]["value"]
        assert dest.read_bytes() == payload
        assert 0 < transfer.multicast < size and transfer.http == size - transfer.multicast
        assert server.ranges == [f"bytes={transfer.multicast}-"]
        assert sender.wait(10) and sender.report.state == SenderState.FAILED
        assert not pid_alive(pid)
    finally:
        server.close()


def test_a_wrong_multicast_prefix_is_caught_and_fetched_whole(tmp_path):
    """A receiver that wrote garbage (a lying sender on the network): the checksum fails,
    and the image is fetched whole over HTTP; never kept wrong."""
    payload = os.urandom(3 << 20)
    server = FlakyServer(payload)
    server.cut = False
    try:
        def liar(writer):
            writer.write(os.urandom(1 << 20))
            return 1 << 20

        dest = tmp_path / "base.raw"
        transfer = fetch(server.url, dest, sha256=hashlib.sha256(payload).hexdigest(), size=len(payload),
                         token=None, multicast=liar, sleep=lambda s: None)
        assert dest.read_bytes() == payload
        assert transfer.multicast == 1 << 20 and transfer.http == (len(payload) - (1 << 20)) + len(payload)
        assert server.ranges == [f"bytes={1 << 20}-"]
    finally:
        server.close()


def test_a_stale_pid_file_of_another_program_is_not_killed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "udp-sender-old.pid").write_text(f"{os.getpid()}\n")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (run / "udp-sender-other.pid").write_text(f"{sleeper.pid}\n")
        assert stale_senders(run, "udp-sender") == []
        assert pid_alive(sleeper.pid) and not list(run.iterdir())
    finally:
        sleeper.kill()
        sleeper.wait()
