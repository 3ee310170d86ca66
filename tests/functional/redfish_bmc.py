"""A Redfish BMC on loopback for functional tests: sushy-tools' emulator (the one the lab
runs, here with its in-memory fake systems), over TLS with a certificate from a CA made
for the test, and HTTP basic auth from an htpasswd file (bcrypt, as it requires)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from provisioner.lab.redfish import emulator_command, make_ca_and_cert, write_htpasswd

SYSTEM_ID = "5f3b1a2e-9c4d-4e6f-8a1b-2c3d4e5f6a7b"
SYSTEM = f"/redfish/v1/Systems/{SYSTEM_ID}"


class RedfishBmc:
    """sushy-emulator with one fake system, powered off, started and stopped by the test."""

    def __init__(self, directory: Path, user: str = "admin", password: str = "Redfish-pass-7") -> None:
        self.dir = directory
        self.user, self.password = user, password
        self.ca, cert, key = make_ca_and_cert(directory)
        write_htpasswd(directory / "htpasswd", user, password)
        (directory / "emulator.conf").write_text(
            f"SUSHY_EMULATOR_AUTH_FILE = {str(directory / 'htpasswd')!r}\n"
            f"SUSHY_EMULATOR_STATE_DIR = {str(directory / 'state')!r}\n"
            "SUSHY_EMULATOR_FAKE_SYSTEMS = [{'uuid': %r, 'name': 'node-a', 'power_state': 'Off',\n"
            "    'nics': [{'mac': '52:54:00:00:00:aa', 'ip': '10.0.0.10'}]}]\n" % SYSTEM_ID)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log = (directory / "emulator.log").open("ab")
        self.proc = subprocess.Popen(emulator_command(directory / "emulator.conf", "127.0.0.1", self.port, cert, key,
                                                      "--fake"), stdout=self.log, stderr=self.log)
        end = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    self.stop()
                    raise RuntimeError((directory / "emulator.log").read_text())
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
