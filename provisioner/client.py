"""HTTP client for the daemon's API, over TCP or the local unix socket. API errors come
back as the same exception types the daemon raised, so exit codes match."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from pathlib import Path
from typing import Any, Callable

from . import errors
from .errors import DaemonUnavailable, ProvisionerError


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Client:
    def __init__(self, api: str, token: str | None = None, timeout: float = 120.0) -> None:
        self.api = api
        self.token = token
        self.timeout = timeout

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _connection(self) -> http.client.HTTPConnection:
        url = urllib.parse.urlsplit(self.api)
        if url.scheme == "unix":
            return _UnixConnection(url.path, self.timeout)
        if url.scheme == "http":
            return http.client.HTTPConnection(url.hostname or "localhost", url.port or 80,
                                              timeout=self.timeout)
        raise errors.ConfigError(f"API address {self.api!r} must start with http:// or unix://")

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None
        headers = self._headers()
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self._connection()
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonUnavailable(url=self.api) from exc
        finally:
            conn.close()
        return self._decode(resp.status, raw)

    @staticmethod
    def _decode(status: int, raw: bytes) -> Any:
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = {"error": {"type": "ProvisionerError", "message": raw.decode(errors="replace")[:200]}}
        if status >= 400:
            err = doc.get("error", {}) if isinstance(doc, dict) else {}
            kind = getattr(errors, str(err.get("type")), None)
            if not (isinstance(kind, type) and issubclass(kind, ProvisionerError)):
                kind = ProvisionerError
            raise kind(str(err.get("message") or f"HTTP {status}"))
        return doc

    def upload(self, path: str, file: Path, progress: Callable[[int, int], None]) -> Any:
        """PUT a file as the body, streamed, telling progress as it goes."""
        size = file.stat().st_size
        headers = {**self._headers(), "Content-Type": "application/octet-stream", "Content-Length": str(size)}
        conn = self._connection()
        try:
            conn.putrequest("PUT", path)
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.endheaders()
            sent = 0
            try:
                with file.open("rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        conn.send(chunk)
                        sent += len(chunk)
                        progress(sent, size)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon refused early; its answer says why
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonUnavailable(url=self.api) from exc
        finally:
            conn.close()
        return self._decode(resp.status, raw)

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
