"""The agent's side of the API: JSON over HTTP with the per-boot token, retrying while
the daemon is away (it may be restarting) and telling auth failures apart."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any, Callable

LOG = logging.getLogger("agent")


class AuthRejected(Exception):
    """401: our token is no longer valid (a new boot, or a new lookup happened)."""


class Refused(Exception):
    """4xx other than 401: retrying the same call will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class AgentApi:
    def __init__(self, base_url: str, timeout: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token: str | None = None
        self._sleep = sleep

    def _once(self, path: str, body: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["X-Agent-Token"] = self.token
        req = urllib.request.Request(self.base_url + path, data=json.dumps(body).encode(),
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = exc.reason
            if exc.code == 401:
                raise AuthRejected(message) from exc
            if 400 <= exc.code < 500:
                raise Refused(exc.code, message) from exc
            raise

    def call(self, path: str, body: dict[str, Any], max_wait: float = 30.0) -> Any:
        """POST with retries on network and 5xx errors, backing off up to max_wait."""
        delay = 1.0
        while True:
            try:
                return self._once(path, body)
            except (AuthRejected, Refused):
                raise
            except (OSError, urllib.error.URLError, ValueError) as exc:
                LOG.warning("agent: %s failed (%s); retrying in %.0fs", path, exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, max_wait)
