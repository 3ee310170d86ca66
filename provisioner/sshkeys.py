"""SSH keys: the provisioner's own key (what it logs in to hosts with) and a new host
key for each deployed host, made here so the host's identity is known before it boots."""

from __future__ import annotations

import os
import tempfile
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
    """The provisioner's key pair under data_dir/ssh, made on first use: (private key path,
    public line). Safe when several threads or processes ask at once: the key is written
    whole under a temporary name and linked into place, so it either exists whole or not at
    all, one maker wins, and the public line is derived from the private key that won."""
    folder = data_dir / "ssh"
    private_path = folder / "id_ed25519"
    public_path = folder / "id_ed25519.pub"
    if not private_path.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        private, _ = new_keypair("provisioner")
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".id_ed25519.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(private)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, private_path)
            except FileExistsError:
                pass  # another maker won; its key is the key
        finally:
            os.unlink(tmp)
    key = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode() + " provisioner"
    if not public_path.exists() or public_path.read_text().strip() != public:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".id_ed25519.pub.")
        with os.fdopen(fd, "w") as fh:
            fh.write(public + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, public_path)
    return private_path, public
