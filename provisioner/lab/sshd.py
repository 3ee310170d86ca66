"""An sshd for this machine on the lab bridge's address, inside the lab (its namespace and
its view of libvirt), so that the lab's libvirtd is reached as a remote host's is: over SSH,
with a host key of its own. `provisioner lab host` registers this machine so as a host
that guests can be placed on; the lab tests use it the same way."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from ..errors import LabError
from ..sshkeys import new_keypair

SSHD_CONFIG = """ListenAddress {address}
HostKey {work}/host_key
AuthorizedKeysFile {work}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile {work}/sshd.pid
Subsystem sftp /usr/lib/openssh/sftp-server
"""


class LabSshd:
    def __init__(self, lab: Any, authorized: str, work: Path | None = None) -> None:
        """`lab` a provisioner.lab.lab.Lab; `authorized` the public key that may log in."""
        self.lab = lab
        self.work = work or lab.dir / "sshd"
        self.work.mkdir(exist_ok=True)
        (self.work / "authorized_keys").write_text(authorized + "\n")
        (self.work / "sshd_config").write_text(SSHD_CONFIG.format(address=lab.cfg.address, work=self.work))
        self.proc: subprocess.Popen[bytes] | None = None
        self._original = new_keypair("root@lab-host")
        self.public = self._original[1]
        self._use(*self._original)

    def _use(self, private: str, public: str) -> None:
        (self.work / "host_key").write_text(private)
        os.chmod(self.work / "host_key", 0o600)
        (self.work / "host_key.pub").write_text(public + "\n")

    def new_key(self) -> None:
        """Another host key (as a reinstalled or impersonated host would have); restore() undoes it."""
        self._use(*new_keypair("root@impostor"))

    def restore(self) -> None:
        self._use(*self._original)

    def start(self, detach: bool = False) -> int:
        """Start it (detached: it outlives this process, until `lab down`); its pid."""
        Path("/run/sshd").mkdir(exist_ok=True)
        # Its log to a file: a pipe nobody reads fills up after enough sessions (ansible
        # opens many), and sshd then blocks writing to it.
        with (self.work / "sshd.log").open("ab") as log:
            # Inside the lab's view of libvirt: its libvirtd is the one a client's
            # qemu+ssh reaches here.
            self.proc = subprocess.Popen(self.lab.libvirt.inside(["/usr/sbin/sshd", "-D", "-e",
                                                                  "-f", str(self.work / "sshd_config")]),
                                         stdin=subprocess.DEVNULL, stderr=log, start_new_session=detach)
        time.sleep(1)
        if self.proc.poll() is not None:
            raise LabError(f"the lab's sshd did not start: {(self.work / 'sshd.log').read_text().strip()[-300:]}")
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()
        self.proc = None


def register(lab: Any, name: str = "lab-host", rack: str = "rack-0") -> dict[str, Any]:
    """This machine as a host of the lab's fleet: an sshd of the lab's (detached, until `lab
    down`) that takes the daemon's operator key, and the host registered with its key and the
    lab's bridge for guest NICs. Guests placed on it run on the lab's libvirtd under plain
    emulation, not nested inside a node."""
    if lab.load() is None:
        raise LabError(f"lab {lab.cfg.name} is not up")
    client = lab.client()
    sshd = LabSshd(lab, client.get("/v1/ssh-key")["public_key"], work=lab.dir / "host-sshd")
    sshd.start(detach=True)
    doc: dict[str, Any] = client.post("/v1/hosts", {"name": name, "address": lab.cfg.address, "port": 22,
                                                    "rack": rack, "host_key": sshd.public, "bridge": lab.cfg.bridge})
    return doc
