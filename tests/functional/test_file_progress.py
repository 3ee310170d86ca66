"""A large file the HTTP service sends is counted as it goes out, slice by slice: the
image byte counter is live while an agent downloads, and a client that vanishes half way
(a node whose power was pulled) has what it received counted when it went, not when its
socket finally times out."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from provisioner.api.http import SEND_SLICE, HttpService, Response, Route, Router
from provisioner.api.server import Limits
from provisioner.boot.accesslog import AccessLog
from provisioner.statuses import AuthKind

SIZE = 6 * SEND_SLICE


class Sent:
    def __init__(self) -> None:
        self.total = 0
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.total += n


@pytest.fixture
def served(tmp_path: Path):
    payload = tmp_path / "big.raw"
    with payload.open("wb") as fh:
        fh.truncate(SIZE)
    sent = Sent()
    router = Router(lambda req, auth: None)
    router.add(Route("GET", "/big", lambda req: Response(file=payload, on_sent=sent.add), AuthKind.NONE, "big"))
    service = HttpService(router, listen="127.0.0.1", port=0, socket_path=None,
                          access_log=AccessLog(tmp_path / "access.log"), limits=Limits(io_timeout=600))
    service.start()
    try:
        yield service.port, sent, tmp_path / "access.log"
    finally:
        service.stop()


def logged(log: Path) -> str:
    return log.read_text() if log.exists() else ""


def wait_for(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_stalled_download_is_counted_while_it_is_open(served):
    port, sent, log = served
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        client.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        received = 0
        while received < 2 * SEND_SLICE:
            received += len(client.recv(1 << 20))
        # The client stops reading but keeps its socket open: the server is blocked in a
        # send, yet what went out so far is already counted.
        wait_for(lambda: sent.total >= SEND_SLICE)
        assert sent.total < SIZE
    # Gone for good: the partial count stands, the access log says how much went out.
    wait_for(lambda: " /big " in logged(log))
    assert received <= sent.total < SIZE
    line = log.read_text().splitlines()[-1]
    assert line.split()[-2] == str(sent.total), line


def test_a_whole_file_is_counted_once(served):
    port, sent, log = served
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := client.recv(1 << 20):
            data += chunk
    assert data.endswith(b"\0" * 1024) and len(data.split(b"\r\n\r\n", 1)[1]) == SIZE
    wait_for(lambda: " /big " in logged(log))
    assert sent.total == SIZE
