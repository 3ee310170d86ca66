"""Connections to a host's libvirtd over SSH (`qemu+ssh://`, OpenSSH's client), with the
host key checked against the one recorded for the host: a known_hosts file holding
exactly that key, and strict checking, so an unknown or changed key is refused, never
trusted on first use. The client key is the provisioner's operator key.

libvirt's ssh transport runs `ssh` with its own options and offers no way to name a
known_hosts file, so the command it runs is a small wrapper (one per host, made here)
that adds ours. (The libssh transport takes a known_hosts file directly, but its stream
uploads stalled now and then: the client waiting in virStreamFinish for a reply that
never came, every process idle; see docs/design.md.)"""

from __future__ import annotations

import os
import shlex
import threading
import urllib.parse
from pathlib import Path

import libvirt

from ..errors import HostError, HostUnreachable, InvalidInput

# libvirt prints every error on stderr by default; ours are translated instead.
libvirt.registerErrorHandler(lambda ctx, err: None, None)


def _put(path: Path, text: str, mode: int) -> None:
    """Write a file other connections may be reading or running at this moment: unchanged
    files are left alone, changed ones replaced whole (a running wrapper keeps its old
    inode; writing into it would fail with "Text file busy", or run half a file)."""
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def known_hosts_file(folder: Path, host: str, address: str, host_key: str, port: int = 22) -> Path:
    """A known_hosts file with the one key recorded for this host."""
    parts = host_key.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")):
        raise InvalidInput(f"host {host}: no usable SSH host key recorded ({host_key[:30]!r})")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / host
    where = address if port == 22 else f"[{address}]:{port}"
    _put(path, f"{where} {parts[0]} {parts[1]}\n", 0o600)
    return path


def ssh_command(folder: Path, host: str, known_hosts: Path) -> Path:
    """The ssh command libvirt runs for this host: OpenSSH with our known_hosts only."""
    path = folder / f"{host}.ssh"
    options = ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
               "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=15",
               "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR"]
    _put(path, "#!/bin/sh\n# made by the provisioner: ssh to this host with its recorded key only\n"
               f"exec ssh {shlex.join(options)} \"$@\"\n", 0o700)
    return path


def host_uri(address: str, key_file: Path, command: Path, user: str = "root", port: int = 22) -> str:
    query = urllib.parse.urlencode({"keyfile": str(key_file), "command": str(command), "no_tty": "1"})
    where = f"[{address}]" if ":" in address else address
    return f"qemu+ssh://{user}@{where}:{port}/system?{query}"


def open_host(host: str, address: str, host_key: str, key_file: Path, folder: Path,
              port: int = 22) -> libvirt.virConnect:
    known = known_hosts_file(folder, host, address, host_key, port)
    command = ssh_command(folder, host, known)
    try:
        return libvirt.open(host_uri(address, key_file, command, port=port))
    except libvirt.libvirtError as exc:
        raise connect_error(host, address, exc.get_error_message() or str(exc), key_file) from exc


def connect_error(host: str, address: str, text: str, key_file: Path) -> HostError:
    """What a failed connection means, from ssh's and libvirt's words. Only ssh's own
    sentences count: our files' paths (under known_hosts/) appear in other errors too."""
    lowered = text.lower()
    if any(w in lowered for w in ("host key verification failed", "host identification has changed",
                                  "host key is known", "host key for")):
        return HostError(f"host {host} ({address}): its SSH host key is not the one recorded at deploy "
                         f"time; refusing to connect ({text})")
    if "permission denied" in lowered or "authentication failed" in lowered or "auth fail" in lowered:
        return HostError(f"host {host} ({address}) refused the provisioner's SSH key: add the line from "
                         f"{key_file}.pub ('provisioner host ssh-key') to root's authorized_keys there "
                         f"({text})")
    if any(w in lowered for w in ("connection refused", "timed out", "no route", "unreachable",
                                  "failed to connect", "could not resolve")):
        return HostUnreachable(f"host {host} ({address}) is unreachable: {text}")
    return HostError(f"host {host} ({address}): libvirt connection failed: {text}")
