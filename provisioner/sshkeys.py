"""SSH keys: the provisioner's own key (what it logs in to hosts with) and a new host
key for each deployed host, made here so the host's identity is known before it boots."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def new_keypair(comment: str) -> tuple[str, str]:
    """(private key in OpenSSH format, public key line)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def operator_key(data_dir: Path) -> tuple[Path, str]:
    """The provisioner's key pair under data_dir/ssh, made on first use: (private key path, public line)."""
    folder = data_dir / "ssh"
    private_path = folder / "id_ed25519"
    public_path = folder / "id_ed25519.pub"
    if not private_path.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        private, public = new_keypair("provisioner")
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(private)
        public_path.write_text(public + "\n")
    return private_path, public_path.read_text().strip()
