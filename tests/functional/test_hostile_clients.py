"""Hostile clients on the provisioning network, against `provisioner serve` as its own
process: TFTP uploads and malformed packets, idle and slow HTTP connections, malformed
heads and bodies, bursts on the unix socket. Each gets a clear answer, nothing is
written, the daemon keeps serving, and its log has no traceback."""

from __future__ import annotations

import io
import json
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import tftpy

from .conftest import DaemonProcess

IPXE = Path("/usr/lib/ipxe")


@pytest.fixture(scope="module")
def daemon():
    work = Path(tempfile.mkdtemp(prefix="pv-", dir="/tmp"))
    proc = DaemonProcess(work, "http.request_timeout=2", "http.idle_timeout=3", "http.max_busy=32")
    proc.start()
    yield proc
    proc.stop()
    shutil.rmtree(work, ignore_errors=True)


def threads(proc: DaemonProcess) -> int:
    assert proc.proc is not None
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def log_text(proc: DaemonProcess) -> str:
    return (proc.workdir / "daemon.log").read_text(errors="replace")


# -- TFTP ----------------------------------------------------------------------------

def tftp_exchange(port: int, packet: bytes, timeout: float = 3.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, ("127.0.0.1", port))
        return sock.recvfrom(65536)[0]


def tftp_get(port: int, name: str) -> bytes:
    buf = io.BytesIO()
    tftpy.TftpClient("127.0.0.1", port).download(name, buf, timeout=2, retries=1)
    return buf.getvalue()


def error_code(reply: bytes) -> int:
    opcode, code = struct.unpack("!HH", reply[:4])
    assert opcode == 5, reply
    return code


def test_tftp_refuses_uploads_and_writes_nothing(daemon, tmp_path):
    root = daemon.workdir / "data" / "tftp-root"
    before = sorted(root.rglob("*"))
    for name in (b"evil.bin", b"sub/dir/evil.bin", b"boot.ipxe", b"../../evil"):
        reply = tftp_exchange(daemon.tftp_port, struct.pack("!H", 2) + name + b"\0octet\0")
        assert error_code(reply) == 2 and b"read-only" in reply, reply
    # A whole upload with a real client fails too, and nothing appeared anywhere.
    payload = tmp_path / "payload"
    payload.write_bytes(b"x" * 200_000)
    with pytest.raises(tftpy.TftpException):
        tftpy.TftpClient("127.0.0.1", daemon.tftp_port).upload("big.bin", str(payload), timeout=2, retries=1)
    assert sorted(root.rglob("*")) == before
    assert not list((daemon.workdir / "data").rglob("*evil*")) and not list(daemon.workdir.rglob("big.bin"))


MALFORMED_TFTP = [
    b"\x00",                                        # shorter than an opcode
    b"\x00\x09whatever\x00octet\x00",                  # no such opcode
    b"\x00\x01",                                    # a read request with nothing in it
    b"\x00\x01boot.ipxe",                           # no terminating NUL
    b"\x00\x01\x00octet\x00",                       # an empty name
    b"\x00\x01boot.ipxe\x00octet\x00blksize\x00lots\x00",  # an option that is not a number
    b"\x00\x01boot.ipxe\x00octet\x00blksize\x00",  # an option without a value
    b"\x00\x01\xff\xfe\x00octet\x00",               # a name that is not ASCII
    b"\x00\x01" + b"A" * 2000 + b"\x00octet\x00",   # larger than any request may be
    b"\x00\x04\x00\x01",                            # an ACK out of nowhere
    b"\x00\x05\x00\x01oops\x00",                    # an ERROR out of nowhere
]


def test_tftp_answers_malformed_packets_with_an_error_and_keeps_serving(daemon):
    for packet in MALFORMED_TFTP:
        reply = tftp_exchange(daemon.tftp_port, packet)
        assert error_code(reply) == 4, (packet, reply)
    assert tftp_get(daemon.tftp_port, "undionly.kpxe") == (IPXE / "undionly.kpxe").read_bytes()
    counters = daemon.client.get("/v1/stats")["counters"]
    assert "tftp:restarts" not in counters
    assert "Traceback" not in log_text(daemon)


def test_tftp_bounds_transfers_per_client(daemon):
    """Requests that are never acknowledged hold a transfer each: beyond the per-client
    bound (4) the next request is refused at once, and a normal client is served again
    once they have timed out."""
    socks = []
    try:
        replies = []
        for _ in range(6):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(3)
            sock.sendto(b"\x00\x01undionly.kpxe\x00octet\x00", ("127.0.0.1", daemon.tftp_port))
            replies.append(sock.recvfrom(65536)[0])
            socks.append(sock)
        opcodes = [struct.unpack("!H", r[:2])[0] for r in replies]
        assert opcodes[:4] == [3, 3, 3, 3] and opcodes[4:] == [5, 5], opcodes  # DATA, then ERROR
        assert daemon.client.get("/v1/stats")["counters"].get("tftp:busy", 0) >= 2
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            assert tftp_get(daemon.tftp_port, "undionly.kpxe")
            break
        except tftpy.TftpException:
            assert time.monotonic() < deadline, "the abandoned transfers were never let go"
            time.sleep(1)


# -- HTTP ----------------------------------------------------------------------------

def raw_http(port: int, data: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send bytes as they are; return the status and the body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        reply = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
            head, sep, body = reply.partition(b"\r\n\r\n")
            if sep:
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
    status = int(reply.split(b" ", 2)[1])
    return status, reply.partition(b"\r\n\r\n")[2]


MALFORMED_HTTP = [
    (b"POST /v1/agent/lookup HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}", 400),
    (b"POST /v1/agent/lookup HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}", 400),
    (b"POST /v1/agent/lookup HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
    (b"POST /v1/agent/lookup HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{}", 413),
    (b"POST /v1/agent/lookup HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411),
    (b"POST /v1/agent/lookup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40002\r\n\r\n"
     + b"[" * 20001 + b"]" * 20001, 400),
    (b"POST /v1/agent/lookup HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n\xff\xfe\x00\x01", 400),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /v1/health HTTP/7.0\r\n\r\n", 505),
    (b"GET /v1/health\r\n\r\n", 400),
    (b"GET /v1/health HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431),
    (b"GET /v1/health HTTP/1.1\r\nBad Header Line\r\n\r\n", 400),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /v1/health HTTP/1.1\r\nX: " + b"a" * 70000, 431),  # a head that never ends
    (b"PATCH /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"BREW /v1/nodes HTTP/1.1\r\nHost: x\r\n\r\n", 405),
]


def test_malformed_requests_get_a_4xx_with_one_line(daemon):
    for data, status in MALFORMED_HTTP:
        got, body = raw_http(daemon.http_port, data)
        assert got == status, (data[:80], got, body[:200])
        doc = json.loads(body)
        assert doc["error"]["message"] and "\n" not in doc["error"]["message"], body
    status, body = raw_http(daemon.http_port, b"PATCH /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 405
    assert raw_http(daemon.http_port, b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0] == 200
    assert "Traceback" not in log_text(daemon)


def test_a_slow_request_is_cut_off_at_its_deadline(daemon):
    """One byte every quarter second keeps a connection busy forever if only silence counts
    (the idle timeout never fires): the daemon answers 408 while the client is still sending,
    its request never complete."""
    head = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 400  # 100 s of bytes, never ended
    sent, status = 0, b""
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=10) as sock:
        for byte in head:
            if select.select([sock], [], [], 0.25)[0]:  # the daemon has something to say
                break
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            sent += 1
        try:
            status = sock.recv(200)
        except OSError:
            pass
    assert status.startswith(b"HTTP/1.1 408"), status
    assert sent < len(head), "the daemon waited for the whole slow request"


def test_idle_connections_hold_no_thread_and_do_not_stop_the_daemon(daemon):
    baseline = threads(daemon)
    idle = []
    try:
        for _ in range(1000):
            idle.append(socket.create_connection(("127.0.0.1", daemon.http_port), timeout=5))
        # Half of them send part of a request and stop there.
        for sock in idle[::2]:
            sock.send(b"POST /v1/agent/lookup HTTP/1.1\r\nContent-Length: 50\r\n")
        time.sleep(0.5)
        assert threads(daemon) <= baseline + 5
        # The daemon still answers, over TCP and over the unix socket, and still enrolls.
        assert raw_http(daemon.http_port, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
        assert daemon.client.get("/v1/health")["status"] == "ok"
        pw = daemon.workdir / "pw"
        pw.write_text("flood-pass\n")
        node = daemon.client.post("/v1/nodes", {"mac": "52:54:00:aa:00:01", "rack": "rack-1", "inspect": False,
                                                 "bmc": {"address": "10.0.0.9", "username": "admin",
                                                         "password": "flood-pass"}})
        assert node["name"]
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while threads(daemon) > baseline + 2:
        assert time.monotonic() < deadline, f"{threads(daemon)} threads, {baseline} before"
        time.sleep(0.2)
    assert "Traceback" not in log_text(daemon)


def test_requests_beyond_the_busy_cap_get_503(daemon):
    """Slow uploads to a streaming route hold a worker each (once past the head); past
    http.max_busy (32 here) the next request is told to come back."""
    token = (daemon.workdir / "data" / "operator.token").read_text().strip()
    head = (f"PUT /v1/images?name=flood&filename=flood.raw HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Length: 1000000\r\n\r\n").encode()
    held = []
    try:
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", daemon.http_port), timeout=5)
            sock.sendall(head + b"x")
            held.append(sock)
        time.sleep(1)
        status, body = raw_http(daemon.http_port, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503 and b"try again" in body, body
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while raw_http(daemon.http_port, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert "Traceback" not in log_text(daemon)


def test_a_client_that_goes_away_is_one_quiet_line(daemon):
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=5) as sock:
        sock.sendall(b"GET /boot/nothing-here HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    time.sleep(0.3)
    assert "Traceback" not in log_text(daemon)


def test_sixteen_cli_calls_at_once_over_the_unix_socket(daemon):
    """Sixteen CLI processes started together, each connecting to the unix socket."""
    args = [sys.executable, "-m", "provisioner", "--json", "--api", f"unix://{daemon.workdir / 'api.sock'}", "nodes"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(16)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    for code, out, err in results:
        assert code == 0 and "nodes" in json.loads(out), err


def test_expect_100_continue_is_answered_by_the_loop_and_the_body_read_there(daemon):
    body = b'{"mac": "52:54:00:ee:00:01"}'
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=5) as sock:
        sock.sendall(b"POST /v1/agent/lookup HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        reply = b""
        while b"}" not in reply.partition(b"\r\n\r\n")[2]:
            chunk = sock.recv(4096)
            assert chunk, reply
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 404") and b"not enrolled" in reply, reply
    assert reply.count(b"100 Continue") == 0


def test_a_burst_of_connections_on_the_unix_socket_is_not_refused(daemon):
    """64 clients connect in the same instant (a timeout makes connect non-blocking, so a
    full listen backlog is EAGAIN at once, as 16 CLI calls saw with the default of 5)."""
    import threading
    barrier = threading.Barrier(64)
    errors: list[str] = []
    path = str(daemon.workdir / "api.sock")

    def connect() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            barrier.wait()
            try:
                sock.connect(path)
                sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if not sock.recv(100).startswith(b"HTTP/1.1 200"):
                    errors.append("no 200")
            except OSError as exc:
                errors.append(repr(exc))

    threads = [threading.Thread(target=connect) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
