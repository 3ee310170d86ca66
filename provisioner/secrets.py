"""Secrets: a string type that never prints, at-rest encryption of BMC passwords, and the
hash under which agents' tokens are stored (never the tokens themselves)."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .errors import ConfigError


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Secret:
    """A secret value; repr/str show a mask so it cannot leak into logs by accident."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('******')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SecretBox:
    """Encrypts secrets stored in the database with a key kept in the data directory.

    The key file is created once with mode 0600; the database alone never reveals a
    BMC password (Fernet: AES-128-CBC + HMAC-SHA256, from the `cryptography` package).
    """

    def __init__(self, key_file: Path) -> None:
        self._key_file = key_file
        self._key = self._load_or_create(key_file)
        self._fernet = Fernet(self._key)

    def derive(self, purpose: str) -> Secret:
        """A token for `purpose` that every holder of this key computes alike (controllers
        sharing a database share the key): HMAC-SHA256 of the purpose."""
        return Secret(hmac.new(self._key, purpose.encode(), hashlib.sha256).hexdigest())

    @staticmethod
    def _load_or_create(key_file: Path) -> bytes:
        if key_file.exists():
            return key_file.read_bytes().strip()
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key

    def seal(self, secret: Secret) -> str:
        return self._fernet.encrypt(secret.reveal().encode()).decode()

    def open(self, sealed: str) -> Secret:
        try:
            return Secret(self._fernet.decrypt(sealed.encode()).decode())
        except InvalidToken as exc:
            raise ConfigError(
                f"cannot decrypt a stored secret with {self._key_file}: the key file was replaced"
            ) from exc
