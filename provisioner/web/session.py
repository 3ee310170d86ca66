"""The dashboard's login: the operator token, once, for a signed cookie that expires.
The cookie's key is derived from the token, so a new token ends every session."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Callable

COOKIE = "provisioner_session"
LIFETIME = 12 * 3600


class Sessions:
    def __init__(self, operator_token: str, clock: Callable[[], float] = time.time) -> None:
        self._token = operator_token
        self._key = hmac.new(operator_token.encode(), b"provisioner dashboard session", hashlib.sha256).digest()
        self._clock = clock

    def token_matches(self, token: str) -> bool:
        return bool(token) and hmac.compare_digest(token.encode(), self._token.encode())

    def issue(self) -> str:
        expires = int(self._clock()) + LIFETIME
        return f"v1.{expires}.{self._sign(expires)}"

    def valid(self, value: str | None) -> bool:
        parts = (value or "").split(".")
        if len(parts) != 3 or parts[0] != "v1" or not parts[1].isdigit() or len(parts[1]) > 12:
            return False
        expires = int(parts[1])
        return expires > self._clock() and hmac.compare_digest(parts[2], self._sign(expires))

    def _sign(self, expires: int) -> str:
        return hmac.new(self._key, f"v1.{expires}".encode(), hashlib.sha256).hexdigest()

    def set_cookie(self) -> str:
        return f"{COOKIE}={self.issue()}; Path=/ui; Max-Age={LIFETIME}; HttpOnly; SameSite=Strict"

    @staticmethod
    def clear_cookie() -> str:
        return f"{COOKIE}=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict"


def cookie_value(header: str, name: str = COOKIE) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None
