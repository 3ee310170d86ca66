"""What libvirt has no API for, over SSH with paramiko: reading a file on a host (a
guest's serial console log). The host key must be the one recorded for the host; any
other is refused (RejectPolicy), never learned."""

from __future__ import annotations

import base64
import binascii
import socket
from pathlib import Path

import paramiko  # type: ignore[import-untyped]

from ..errors import HostError, HostUnreachable


def _host_key(host: str, line: str) -> paramiko.PKey:
    parts = line.split()
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
    except (IndexError, binascii.Error, paramiko.SSHException, ValueError) as exc:
        raise HostError(f"host {host}: the recorded SSH host key is not usable ({line[:30]!r})") from exc


class Session:
    """An SSH session to one host, closed when its `with` block ends; what goes wrong on
    it comes out as HostError (a dropped channel, a command that timed out)."""

    def __init__(self, host: str, address: str, client: paramiko.SSHClient) -> None:
        self.host = host
        self.address = address
        self.client = client

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def run(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """Run a command; its exit status and its output (stdout, then stderr)."""
        try:
            _, out, err = self.client.exec_command(command, timeout=timeout)
            text = out.read().decode(errors="replace") + err.read().decode(errors="replace")
            return out.channel.recv_exit_status(), text
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise HostError(f"host {self.host} ({self.address}): SSH session failed while running a command: "
                            f"{exc or type(exc).__name__}") from exc


def connect(host: str, address: str, port: int, host_key: str, key_file: Path,
            user: str = "root", timeout: float = 15) -> Session:
    """An SSH session to a host whose key must be the recorded one."""
    client = paramiko.SSHClient()
    key = _host_key(host, host_key)
    client.get_host_keys().add(f"[{address}]:{port}" if port != 22 else address, key.get_name(), key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(address, port=port, username=user, key_filename=str(key_file), timeout=timeout,
                       allow_agent=False, look_for_keys=False)
    except paramiko.BadHostKeyException as exc:
        raise HostError(f"host {host} ({address}): its SSH host key is not the one recorded at deploy time; "
                        "refusing to connect") from exc
    except (OSError, socket.timeout) as exc:
        raise HostUnreachable(f"host {host} ({address}) is unreachable: {exc}") from exc
    except paramiko.SSHException as exc:
        raise HostError(f"host {host} ({address}): SSH failed: {exc}") from exc
    return Session(host, address, client)


def read_tail(host: str, address: str, port: int, host_key: str, key_file: Path, path: str,
              max_bytes: int = 64 * 1024, user: str = "root") -> bytes:
    """The last max_bytes of a file on the host (b'' if it does not exist)."""
    session = connect(host, address, port, host_key, key_file, user)
    try:
        sftp = session.client.open_sftp()
        try:
            size = sftp.stat(path).st_size or 0
        except FileNotFoundError:
            return b""
        with sftp.open(path, "rb") as fh:
            fh.seek(max(0, size - max_bytes))
            return bytes(fh.read(max_bytes))
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise HostError(f"host {host} ({address}): cannot read {path} over SFTP ({exc or type(exc).__name__}): "
                        "its sshd needs the sftp subsystem") from exc
    finally:
        session.close()
