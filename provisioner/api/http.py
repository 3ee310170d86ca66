"""HTTP plumbing: requests, responses, a route table and the servers (TCP for agents,
iPXE and remote operators; a unix socket for local operators). Static files go out with
sendfile(2) so large artifacts never pass through Python."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, BinaryIO, Callable, cast

from ..boot.accesslog import AccessLog
from ..errors import InvalidInput, NotFound, ProvisionerError
from ..statuses import AuthKind
from .server import MAX_BODY, Connection, ConnectionLoop, Limits, Reader, Writer

LOG = logging.getLogger(__name__)
SEND_SLICE = 8 << 20  # bytes per sendfile call: how often a file's progress is counted


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    client: str
    local: bool  # came over the unix socket
    params: dict[str, str] = field(default_factory=dict)
    node: Any = None  # the node an agent token authenticated
    stream: BinaryIO | None = None  # the unread body, for routes that stream it
    length: int = 0

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            doc = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"request body is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise InvalidInput("request body is nested too deeply") from exc
        if not isinstance(doc, dict):
            raise InvalidInput("request body must be a JSON object")
        return doc


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    file: Path | None = None
    headers: dict[str, str] = field(default_factory=dict)
    on_sent: Callable[[int], None] | None = None  # told each part of `file` as it goes out

    @classmethod
    def of_json(cls, doc: Any, status: int = 200) -> "Response":
        # Compact: at ten thousand nodes, indentation was a third of a listing's bytes.
        return cls(status=status, body=(json.dumps(doc, separators=(",", ":")) + "\n").encode())

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain") -> "Response":
        return cls(status=status, body=text.encode(), content_type=content_type)


Handler = Callable[[Request], "Response | dict[str, Any] | list[Any]"]


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # /v1/nodes/{node}
    handler: Handler
    auth: AuthKind
    summary: str
    body: dict[str, Any] | None = None  # JSON schema of the request body, for OpenAPI
    stream: bool = False  # the handler reads a large body itself (uploads)

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template) + "$")


class Router:
    def __init__(self, authorize: Callable[[Request, AuthKind], None]) -> None:
        self.routes: list[Route] = []
        self._compiled: list[tuple[re.Pattern[str], Route]] = []
        self._authorize = authorize

    def add(self, route: Route) -> None:
        self.routes.append(route)
        self._compiled.append((route.pattern, route))

    def streams(self, method: str, path: str) -> bool:
        return any(route.stream and route.method == method and pattern.match(path)
                   for pattern, route in self._compiled)

    def dispatch(self, req: Request) -> Response:
        allowed: list[str] = []
        for pattern, route in self._compiled:
            match = pattern.match(req.path)
            if not match:
                continue
            if route.method != req.method and not (route.method == "GET" and req.method == "HEAD"):
                allowed.append(route.method)
                continue
            req.params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            self._authorize(req, route.auth)
            result = route.handler(req)
            if isinstance(result, Response):
                return result
            return Response.of_json(result)
        if allowed:
            refused = error_response(405, "MethodNotAllowed", f"{req.method} is not allowed on {req.path}")
            refused.headers["Allow"] = ", ".join(sorted(set(allowed) | ({"HEAD"} if "GET" in allowed else set())))
            return refused
        raise NotFound(f"no such resource: {req.path}")


def error_response(status: int, kind: str, message: str) -> Response:
    return Response.of_json({"error": {"type": kind, "message": message}}, status=status)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single 'bytes=' range, None if unsatisfiable."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or (not match[1] and not match[2]):
        return None
    if match[1]:
        start = int(match[1])
        end = int(match[2]) if match[2] else size - 1
    else:
        start, end = max(size - int(match[2]), 0), size - 1
    if start >= size or start > end:
        return None
    return start, min(end, size - 1)


class _Handler(BaseHTTPRequestHandler):
    """One request of a connection the loop hands over whole (see server.py)."""
    protocol_version = "HTTP/1.1"
    server_version = "provisioner"
    sys_version = ""  # no need to tell every client which Python answers
    router: Router
    access_log: Callable[[str], None]
    observe: Callable[[str, int, int], None]  # method, status, bytes sent: the metrics
    request: Connection
    rfile: Reader  # type: ignore[assignment]
    rest: bytes | None = None

    def setup(self) -> None:
        self.connection = self.request.sock
        self.rfile = Reader(self.request.sock, self.request.buffer)
        self.wfile = Writer(self.request.sock)  # type: ignore[assignment]

    def handle(self) -> None:
        self.close_connection = True
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = self.command = ""
            self.request_version = "HTTP/1.1"
            self.send_error(414, "request line over 65536 bytes")
            return
        if not self.raw_requestline or not self.parse_request():
            return
        if self.request_version == "HTTP/0.9":
            self.send_error(400, "HTTP/0.9 is not spoken here")
            return
        if self.headers.defects:  # e.g. a line with no colon: the rest would be read as a body
            self.send_error(400, f"malformed header: {type(self.headers.defects[0]).__name__}")
            return
        self._handle()

    def finish(self) -> None:
        self.rest = None if self.close_connection else self.rfile.rest()

    def handle_expect_100(self) -> bool:
        if self.request.continued:
            return True  # the loop already said it, and read the body
        return bool(super().handle_expect_100())

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a bad request line, bad headers), as one
        JSON line like every other error."""
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.1"  # so the status line is written at all
        reason = self.responses.get(code, ("error",))[0]
        response = error_response(code, "InvalidInput" if 400 <= code < 500 else "InternalError",
                                  f"{reason}: {message}" if message and message != reason else reason)
        response.headers["Connection"] = "close"
        self.close_connection = True
        self._send(response)

    def address_string(self) -> str:
        return self.client_address[0] if isinstance(self.client_address, tuple) else "unix"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        LOG.debug("http %s: " + format, self.address_string(), *args)

    def _length(self) -> int:
        """The body's length, from one Content-Length that is a number of bytes."""
        if "Transfer-Encoding" in self.headers:
            raise _Refusal(411, "send a Content-Length: chunked or encoded bodies are not accepted")
        values = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if len(values) > 1:
            raise _Refusal(400, "conflicting Content-Length headers")
        raw = values.pop() if values else "0"
        if not re.fullmatch(r"[0-9]{1,19}", raw):
            raise _Refusal(400, f"Content-Length must be a number of bytes, not {raw[:40]!r}")
        return int(raw)

    def _handle(self) -> None:
        started = time.monotonic()
        url = urllib.parse.urlsplit(self.path)
        raw_path = url.path
        try:
            length = self._length()
            streaming = self.router.streams(self.command, raw_path)
            if streaming:
                # Whatever the handler leaves unread cannot be told apart from a next request.
                self.close_connection = True
            elif length > MAX_BODY:
                raise _Refusal(413, f"request body over {MAX_BODY} bytes")
            body = self.rfile.read(length) if length and not streaming else b""
            if len(body) < length and not streaming:
                raise _Refusal(400, f"the body ended after {len(body)} of {length} bytes")
            req = Request(method=self.command, path=raw_path,
                          query=dict(urllib.parse.parse_qsl(url.query)),
                          headers={k.lower(): v for k, v in self.headers.items()}, body=body,
                          client=self.address_string(), local=not isinstance(self.client_address, tuple),
                          stream=cast(BinaryIO, self.rfile) if streaming else None, length=length)
            response = self.router.dispatch(req)
        except _Refusal as exc:
            self.close_connection = True  # what is left of the request cannot be trusted
            response = error_response(exc.status, "InvalidInput", exc.message)
        except ProvisionerError as exc:
            response = error_response(exc.http_status, type(exc).__name__, str(exc))
        except (ConnectionError, TimeoutError):
            raise  # the client went away: the loop says so in one line
        except Exception as exc:  # a bug: answer 500 with a one-line reason, log the trace
            LOG.exception("http: %s %s failed", self.command, raw_path)
            response = error_response(500, "InternalError", f"internal error: {exc}")
        sent = self._send(response)
        self.observe(self.command, response.status, sent)
        self.access_log(f"{self.address_string()} {self.command} {raw_path} {response.status} {sent} "
                        f"{time.monotonic() - started:.3f}")

    def _send(self, response: Response) -> int:
        if response.file is None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
                return len(response.body)
            return 0
        return self._send_file(response.file, response.on_sent or (lambda n: None))

    def _send_file(self, path: Path, on_sent: Callable[[int], None]) -> int:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start, end, status = 0, size - 1, 200
            if "Range" in self.headers:
                span = _parse_range(self.headers["Range"], size)
                if span is None:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return 0
                (start, end), status = span, 206
            count = end - start + 1 if size else 0
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(count))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if self.command == "HEAD" or count == 0:
                return 0
            return self._send_slices(fh, path, start, count, on_sent)

    def _send_slices(self, fh: BinaryIO, path: Path, start: int, count: int, on_sent: Callable[[int], None]) -> int:
        """sendfile in slices, each told to on_sent as it goes out: counters are live, and a
        client that vanishes mid-file (a node powered off) has its bytes counted when they
        went, not when the socket finally times out."""
        sent = 0
        try:
            while sent < count:
                n = int(self.connection.sendfile(fh, offset=start + sent, count=min(SEND_SLICE, count - sent)))
                if n == 0:  # the file is shorter than when the response began
                    self.close_connection = True
                    LOG.warning("http: %s ended after %d of %d bytes while being sent", path.name, sent, count)
                    break
                sent += n
                on_sent(n)
        except (ConnectionError, TimeoutError) as exc:
            # socket.sendfile leaves the file at the offset it reached: a slice's part that
            # went out before the client went away still counts (an agent resumes with a Range).
            self.close_connection = True
            partial = max(0, fh.tell() - start - sent)
            if partial:
                on_sent(partial)
                sent += partial
            LOG.info("http: %s went away after %d of %d bytes of %s: %s", self.address_string(), sent, count,
                     path.name, getattr(exc, "strerror", None) or type(exc).__name__)
        return sent


class _Refusal(Exception):
    """A request the HTTP layer refuses before any route sees it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HttpService:
    """Runs the router on a TCP port and, when given, on a unix socket, both through one
    connection loop (server.py)."""

    def __init__(self, router: Router, *, listen: str, port: int, socket_path: Path | None,
                 access_log: AccessLog, limits: Limits | None = None,
                 observe: Callable[[str, int, int], None] | None = None) -> None:
        handler = type("Handler", (_Handler,), {"router": router, "access_log": access_log.write,
                                                "observe": staticmethod(observe or (lambda *told: None))})
        self.tcp = socket.create_server((listen, port), backlog=1024)
        listeners = [self.tcp]
        if socket_path is not None:
            socket_path.parent.mkdir(parents=True, exist_ok=True)
            if socket_path.exists():
                if _socket_alive(socket_path):
                    self.tcp.close()
                    raise OSError(f"another daemon already answers on {socket_path}")
                socket_path.unlink()
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o117)  # the socket is the operator's key: owner and group only
            try:
                unix.bind(str(socket_path))
            finally:
                os.umask(old)
            unix.listen(1024)  # a burst of CLI calls must not meet EAGAIN
            listeners.append(unix)
        self.socket_path = socket_path

        def serve(conn: Connection) -> bytes | None:
            done: _Handler = handler(conn, conn.client, self)
            return done.rest

        self.loop = ConnectionLoop(listeners, serve, limits or Limits(),
                                   body_in_loop=lambda method, path: not router.streams(method, path))

    @property
    def port(self) -> int:
        return int(self.tcp.getsockname()[1])

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()
        if self.socket_path is not None and self.socket_path.exists():
            self.socket_path.unlink()


def _socket_alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
            return True
        except OSError:
            return False
