"""Connections to a host's libvirtd over SSH (`qemu+libssh://`), with the host key
checked against the one recorded when the host was deployed: a known_hosts file holding
exactly that key, and `known_hosts_verify=normal`, so an unknown or changed key is
refused, never trusted on first use. The client key is the provisioner's operator key."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import libvirt

from ..errors import HostError, HostUnreachable, InvalidInput

# libvirt prints every error on stderr by default; ours are translated instead.
libvirt.registerErrorHandler(lambda ctx, err: None, None)


def known_hosts_file(folder: Path, host: str, address: str, host_key: str, port: int = 22) -> Path:
    """A known_hosts file with the one key recorded for this host."""
    parts = host_key.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")):
        raise InvalidInput(f"host {host}: no usable SSH host key recorded ({host_key[:30]!r})")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / host
    where = address if port == 22 else f"[{address}]:{port}"
    path.write_text(f"{where} {parts[0]} {parts[1]}\n")
    return path


def host_uri(address: str, key_file: Path, known_hosts: Path, user: str = "root", port: int = 22) -> str:
    query = urllib.parse.urlencode({"keyfile": str(key_file), "known_hosts": str(known_hosts),
                                    "known_hosts_verify": "normal", "sshauth": "privkey", "no_tty": "1"})
    where = f"[{address}]" if ":" in address else address
    return f"qemu+libssh://{user}@{where}:{port}/system?{query}"


def open_host(host: str, address: str, host_key: str, key_file: Path, folder: Path,
              port: int = 22) -> libvirt.virConnect:
    known = known_hosts_file(folder, host, address, host_key, port)
    try:
        return libvirt.open(host_uri(address, key_file, known, port=port))
    except libvirt.libvirtError as exc:
        text = exc.get_error_message() or str(exc)
        lowered = text.lower()
        if "host key" in lowered or "known_hosts" in lowered or "known hosts" in lowered:
            raise HostError(f"host {host} ({address}): its SSH host key is not the one recorded at deploy "
                            f"time; refusing to connect ({text})") from exc
        if "auth" in lowered or "permission denied" in lowered:
            raise HostError(f"host {host} ({address}) refused the provisioner's SSH key: add the line from "
                            f"{key_file}.pub ('provisioner host ssh-key') to root's authorized_keys there "
                            f"({text})") from exc
        if any(w in lowered for w in ("connection refused", "timed out", "no route", "unreachable",
                                      "failed to connect")):
            raise HostUnreachable(f"host {host} ({address}) is unreachable: {text}") from exc
        raise HostError(f"host {host} ({address}): libvirt connection failed: {text}") from exc
