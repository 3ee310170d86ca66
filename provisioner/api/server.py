"""The HTTP connection loop, and the reader and writer a worker answers through. One
thread accepts connections and reads each request's head (and its body, when it is small)
without giving the connection a thread of its own, so an idle or slow client costs a file
descriptor, never a thread. A request that has arrived whole is answered on a worker
thread; a kept-alive connection then comes back to the loop.

Limits, each with a clear answer: open connections (503 and close), requests answered at
once (503, Retry-After), a request's head and small body from its first byte (408), a
connection with no request under way (closed quietly), one read or write of a large body
on a worker (the connection is dropped)."""

from __future__ import annotations

import json
import logging
import queue
import re
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

LOG = logging.getLogger(__name__)

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$")
_NEEDS_WORKER = re.compile(rb"(?im)^transfer-encoding:")
MAX_BODY = 1 << 20  # a request body the loop reads for its handler; larger ones are refused (413)
_EXPECT_CONTINUE = re.compile(rb"(?im)^expect:[ \t]*100-continue[ \t]*\r?$")


@dataclass(frozen=True)
class Limits:
    max_connections: int = 4096
    max_busy: int = 64
    request_timeout: float = 20.0
    idle_timeout: float = 30.0
    io_timeout: float = 60.0
    max_head: int = 64 * 1024
    max_body: int = MAX_BODY


@dataclass
class Connection:
    """A client connection and what has arrived of its next request."""
    sock: socket.socket
    client: str | tuple[str, int]  # "" for the unix socket
    buffer: bytearray = field(default_factory=bytearray)
    deadline: float = 0.0
    started: bool = False  # a byte of the next request has arrived
    continued: bool = False  # the loop said "100 Continue" for this request


def plain_response(status: int, reason: str, kind: str, message: str, extra: str = "") -> bytes:
    """A whole response with our JSON error body, for answers the loop gives itself."""
    body = json.dumps({"error": {"type": kind, "message": message}}).encode() + b"\n"
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n").encode() + body


class Reader:
    """A request's bytes: what the connection loop read first, then the socket (a body
    that a route streams itself, or one sent after an Expect: 100-continue)."""

    def __init__(self, sock: socket.socket, data: bytearray) -> None:
        self._sock = sock
        self._buf = data

    def _fill(self) -> bool:
        chunk = self._sock.recv(65536)
        self._buf += chunk
        return bool(chunk)

    def readline(self, limit: int = -1) -> bytes:
        while b"\n" not in self._buf and (limit < 0 or len(self._buf) < limit) and self._fill():
            pass
        end = self._buf.find(b"\n")
        size = end + 1 if end >= 0 else len(self._buf)
        if limit >= 0:
            size = min(size, limit)
        line = bytes(self._buf[:size])
        del self._buf[:size]
        return line

    def read(self, size: int) -> bytes:
        while len(self._buf) < size and self._fill():
            pass
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def rest(self) -> bytes:
        return bytes(self._buf)


class Writer:
    """Writes go out whole (sendall), under the connection's I/O timeout."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def write(self, data: bytes) -> int:
        self._sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass


# What a worker does with a whole request: answer it, and say what is left for the
# loop (the bytes of a pipelined next request), or None when the connection is done.
Serve = Callable[[Connection], "bytes | None"]


class ConnectionLoop:
    def __init__(self, listeners: list[socket.socket], serve: Serve, limits: Limits,
                 body_in_loop: Callable[[str, str], bool]) -> None:
        self.listeners = listeners
        self.limits = limits
        self._serve = serve
        self._body_in_loop = body_in_loop  # False for routes that stream their own body
        self._selector = selectors.DefaultSelector()
        self._returned: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        # Never closed by hand: a worker may still wake the loop while it stops, and a closed
        # descriptor number could by then belong to another file. They close with the loop.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._lock = threading.Lock()
        self._open = 0
        self._busy = 0
        self.refused_at: float | None = None  # monotonic: the last request turned away as busy
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the loop thread -----------------------------------------------------
    def start(self) -> None:
        for sock in self.listeners:
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name="http-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, Connection):
                key.data.sock.close()
        self._selector.close()
        for sock in self.listeners:
            sock.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # the buffer is full: the loop is awake anyway

    def _run(self) -> None:
        next_sweep = 0.0
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=0.5):
                if key.data is None:
                    self._accept(key.fileobj)  # type: ignore[arg-type]
                elif key.data == "wake":
                    while True:
                        try:
                            if not self._wake_r.recv(4096):
                                break
                        except BlockingIOError:
                            break
                else:
                    self._read(key.data)
            while True:
                try:
                    conn = self._returned.get_nowait()
                except queue.Empty:
                    break
                self._wait_for_request(conn)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + 0.5
                self._sweep(now)

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):  # a burst is taken in one go, up to a bound
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: say so, keep serving
                LOG.warning("http: cannot accept a connection: %s", exc)
                return
            with self._lock:
                full = self._open >= self.limits.max_connections
                if not full:
                    self._open += 1
            if full:
                self.refused_at = time.monotonic()
                self._refuse(sock, plain_response(503, "Service Unavailable", "Busy",
                                                  "too many open connections; try again", "Retry-After: 1\r\n"))
                continue
            sock.setblocking(False)
            self._wait_for_request(Connection(sock, addr if isinstance(addr, tuple) else ""))

    def _wait_for_request(self, conn: Connection) -> None:
        conn.started = bool(conn.buffer)
        conn.continued = False
        conn.deadline = time.monotonic() + (self.limits.request_timeout if conn.started
                                            else self.limits.idle_timeout)
        conn.sock.setblocking(False)
        if conn.started and self._whole(conn):
            self._dispatch(conn)
            return
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn, registered=True)
            return
        if not conn.started:
            conn.started = True
            conn.deadline = time.monotonic() + self.limits.request_timeout
        conn.buffer += data
        if self._whole(conn):
            self._selector.unregister(conn.sock)
            self._dispatch(conn)
        elif _HEAD_END.search(conn.buffer) is None and len(conn.buffer) > self.limits.max_head:
            self._selector.unregister(conn.sock)
            self._answer_and_close(conn, plain_response(
                431, "Request Header Fields Too Large", "InvalidInput",
                f"request head over {self.limits.max_head} bytes"))

    def _whole(self, conn: Connection) -> bool:
        """The request can go to a worker: its head has arrived, and its body too when the
        loop reads it. What the head gets wrong is for the worker to answer."""
        end = _HEAD_END.search(conn.buffer)
        if end is None:
            return False
        head = bytes(conn.buffer[:end.start()])
        words = head.split(b"\n", 1)[0].split()
        if len(words) < 2 or _NEEDS_WORKER.search(head):
            return True
        lengths = _CONTENT_LENGTH.findall(head)
        if len(lengths) != 1:
            return True  # none (no body), or several: the worker decides
        length = int(lengths[0])
        if length > self.limits.max_body:
            return True
        path = words[1].split(b"?", 1)[0].decode("latin-1")
        if not self._body_in_loop(words[0].decode("latin-1"), path):
            return True
        if len(conn.buffer) - end.end() >= length:
            return True
        if not conn.continued and _EXPECT_CONTINUE.search(head):
            # The client waits for this before its body; the body then comes to the loop
            # under the request's deadline, like any other (the handler does not ask again).
            conn.continued = True
            try:
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                pass
        return False

    def _dispatch(self, conn: Connection) -> None:
        with self._lock:
            busy = self._busy >= self.limits.max_busy
            if not busy:
                self._busy += 1
        if busy:
            self.refused_at = time.monotonic()
            self._answer_and_close(conn, plain_response(
                503, "Service Unavailable", "Busy",
                f"{self.limits.max_busy} requests are being answered; try again", "Retry-After: 1\r\n"))
            return
        threading.Thread(target=self._work, args=(conn,), name="http-worker", daemon=True).start()

    def _sweep(self, now: float) -> None:
        for key in list(self._selector.get_map().values()):
            conn = key.data
            if not isinstance(conn, Connection) or conn.deadline > now:
                continue
            self._selector.unregister(conn.sock)
            if conn.started:
                LOG.info("http: %s sent no whole request in %.0f s: closed",
                         _name(conn.client), self.limits.request_timeout)
                self._answer_and_close(conn, plain_response(
                    408, "Request Timeout", "Timeout",
                    f"the request did not arrive whole within {self.limits.request_timeout:.0f} s"))
            else:
                self._close(conn)

    # -- workers -------------------------------------------------------------
    def _work(self, conn: Connection) -> None:
        rest: bytes | None = None
        try:
            conn.sock.settimeout(self.limits.io_timeout)
            rest = self._serve(conn)
        except (ConnectionError, TimeoutError, socket.timeout) as exc:
            LOG.info("http: %s went away: %s", _name(conn.client), exc.strerror or type(exc).__name__)
        except Exception:  # a bug: the connection ends, the server goes on
            LOG.exception("http: serving %s failed", _name(conn.client))
        finally:
            with self._lock:
                self._busy -= 1
        if rest is None or self._stopping.is_set():
            self._close(conn)
            return
        conn.buffer = bytearray(rest)
        self._returned.put(conn)
        self._wake()

    # -- endings -------------------------------------------------------------
    def _refuse(self, sock: socket.socket, response: bytes) -> None:
        try:
            sock.setblocking(False)
            sock.send(response)
        except OSError:
            pass
        sock.close()

    def _answer_and_close(self, conn: Connection, response: bytes) -> None:
        try:
            conn.sock.send(response)
        except OSError:
            pass
        self._close(conn)

    def _close(self, conn: Connection, registered: bool = False) -> None:
        if registered:
            self._selector.unregister(conn.sock)
        try:
            conn.sock.close()
        finally:
            with self._lock:
                self._open -= 1

    @property
    def counts(self) -> tuple[int, int]:
        """(open connections, requests being answered)."""
        with self._lock:
            return self._open, self._busy


def _name(client: str | tuple[str, int]) -> str:
    return client[0] if isinstance(client, tuple) else "unix"
