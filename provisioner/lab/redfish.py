"""A Redfish BMC for lab domains: sushy-tools' emulator inside the lab namespace, serving
the lab's libvirt domains as ComputerSystems over TLS (a certificate from a CA the lab
makes, which the lab's daemon is told to trust), with HTTP basic auth."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..errors import LabError
from . import system


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca_and_cert(directory: Path, address: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signs for `address`: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("provisioner lab BMC CA")).issuer_name(
        _name("provisioner lab BMC CA")).public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(address)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def write_htpasswd(path: Path, user: str, password: str) -> None:
    """The emulator's users file: bcrypt digests only, as it requires."""
    path.write_bytes(user.encode() + b":" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=6)) + b"\n")
    path.chmod(0o600)


# Secure Boot nodes name their firmware (no auto-selection): OVMF's SMM build, with its
# variables from Microsoft's enrolled keys when Secure Boot is on and from the empty store
# when it is off. The emulator keeps one variables file per state, as OVMF cannot be told
# to stop enforcing with keys enrolled (its plain build enforces too): boot entries made
# with Secure Boot off are not in the file it boots with on, where shim's fallback makes
# them again from the disk (see provisioner/agent/disk.py).
OVMF = Path("/usr/share/OVMF")
SECURE_BOOT_CODE = OVMF / "OVMF_CODE_4M.secboot.fd"
SECURE_BOOT_VARS = OVMF / "OVMF_VARS_4M.ms.fd"
SECURE_BOOT_CONFIG = (
    f"SUSHY_EMULATOR_BOOT_LOADER_MAP = {{'UEFI': {{'x86_64': {str(SECURE_BOOT_CODE)!r}}}, "
    "'Legacy': {'x86_64': None}}\n"
    f"SUSHY_EMULATOR_SECURE_BOOT_ENABLED_NVRAM = {str(SECURE_BOOT_VARS)!r}\n"
    f"SUSHY_EMULATOR_SECURE_BOOT_DISABLED_NVRAM = {str(OVMF / 'OVMF_VARS_4M.fd')!r}\n")


def emulator_command(config: Path, address: str, port: int, cert: Path, key: Path, *backend: str) -> list[str]:
    tool = Path(sys.executable).parent / "sushy-emulator"
    if not tool.is_file():
        raise LabError(f"sushy-emulator not found next to {sys.executable}: install sushy-tools into that "
                       "environment ('make setup')")
    return [str(tool), "--config", str(config), "-i", address, "-p", str(port),
            "--ssl-certificate", str(cert), "--ssl-key", str(key), *backend]


class RedfishEmulator:
    """One emulator for every Redfish node of the lab, on the namespace's loopback."""

    def __init__(self, inside: Callable[[Sequence[str]], list[str]], netns: str, state_dir: Path, log_file: Path,
                 port: int = 8443) -> None:
        """`inside` makes a command run in the lab, seeing the lab's libvirtd."""
        self.inside = inside
        self.netns = netns
        self.dir = state_dir
        self.log_file = log_file
        self.port = port
        self.ca = state_dir / "ca.pem"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, user: str, password: str, domains: list[str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _, cert, key = make_ca_and_cert(self.dir)
        write_htpasswd(self.dir / "htpasswd", user, password)
        config = self.dir / "emulator.conf"
        # Only the lab's nodes are systems: not the guests a test runs on this libvirtd.
        config.write_text(f"SUSHY_EMULATOR_AUTH_FILE = {str(self.dir / 'htpasswd')!r}\n"
                          f"SUSHY_EMULATOR_ALLOWED_INSTANCES = {domains!r}\n" + SECURE_BOOT_CONFIG)
        with self.log_file.open("ab") as log:
            subprocess.Popen(self.inside(emulator_command(config, "127.0.0.1", self.port, cert, key,
                                                          "--libvirt-uri", "qemu:///system")),
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        system.wait_for(self._listening, 30, "the Redfish emulator to listen")

    def _listening(self) -> bool:
        out = system.run(["ss", "-Htln", f"sport = :{self.port}"], netns=self.netns, check=False).stdout
        return bool(out.strip())

    def pids(self) -> list[int]:
        return system.netns_pids_named(self.netns, b"sushy-emulator")

    def stop(self) -> None:
        system.stop_pids(self.pids())
