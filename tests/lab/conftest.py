"""The virtual lab for end-to-end tests: brought up once per module, always taken down."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml

from provisioner import cli
from provisioner.errors import HostError
from provisioner.lab.lab import Lab

HERE = Path(__file__).resolve().parent


class LabHandle:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.client = lab.client()
        self.inventory = {n["name"]: n for n in yaml.safe_load(lab.inventory_file.read_text())["nodes"]}
        self.data = lab.dir / "data"

    def cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(["--api", f"unix://{self.lab.cfg.socket}", *argv])
        return code, out.getvalue(), err.getvalue()

    def enroll_args(self, name: str, password_file: str | None = None, port: str | None = None) -> list[str]:
        node = self.inventory[name]
        bmc = node["bmc"]
        return ["enroll", node["mac"], "--name", name, "--rack", node["rack"],
                "--bmc", port or bmc["address"], "--bmc-user", bmc["username"],
                "--bmc-password-file", password_file or bmc["password_file"], "--cipher-suite", "3"]

    def wait(self, name: str, predicate, timeout: float = 600) -> dict:
        end = time.monotonic() + timeout
        while True:
            doc = self.client.get(f"/v1/nodes/{name}")
            if predicate(doc):
                return doc
            if time.monotonic() > end:
                raise AssertionError(f"{name} did not get there in {timeout}s: {doc['state']} {doc['step']} "
                                     f"{doc['last_error']}; console: {self.lab.console_log(name)}")
            time.sleep(0.5)

    def log(self, name: str) -> str:
        return (self.data / "logs" / name).read_text()

    def image_bytes(self) -> int:
        """Image bytes our HTTP server has sent to agents (its own counter)."""
        return int(self.client.get("/v1/stats")["counters"].get("image_bytes_served", 0))

    def image_requests(self) -> int:
        """Image downloads agents have started from our HTTP server (counted as each
        request arrives, so a request is never counted late)."""
        counters = self.client.get("/v1/stats")["counters"]
        return sum(int(v) for k, v in counters.items() if k.startswith("http:image:"))

    def job_bytes(self, name: str) -> int | None:
        """Image bytes the node's agent received in the last job, as the job recorded them."""
        job = self.client.get("/v1/jobs")["jobs"][-1]
        return next(m["bytes"] for m in job["nodes"] if m["name"] == name)

    def events(self, name: str, since: float = 0.0) -> list[dict]:
        return [e for e in self.client.get(f"/v1/nodes/{name}/events")["events"] if e["ts"] >= since]

    def ssh(self, name: str, command: str) -> str:
        """Run a command on a deployed host over SSH (paramiko, from inside the lab's
        namespace), checking the host key the provisioner recorded at deploy time."""
        doc = self.client.get(f"/v1/nodes/{name}")
        proc = subprocess.run(["ip", "netns", "exec", self.lab.cfg.netns, sys.executable, str(HERE / "ssh_run.py"),
                               doc["host"]["facts"]["address"], str(self.data / "ssh/id_ed25519"),
                               doc["host"]["ssh_host_key"], command],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def wait_job(self, job_id: int, timeout: float = 900) -> dict:
        end = time.monotonic() + timeout
        while True:
            job = self.client.get(f"/v1/jobs/{job_id}")
            if job["status"] != "running":
                return job
            assert time.monotonic() < end, f"job {job_id} still running after {timeout}s: {job}"
            time.sleep(1)


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
    """An sshd for this machine on the lab bridge's address (inside the lab namespace), so
    that its libvirtd is reached as a remote host is: over SSH, with a host key of its own."""

    def __init__(self, lab: Lab, authorized: str) -> None:
        self.lab = lab
        self.work = lab.dir / "sshd"
        self.work.mkdir(exist_ok=True)
        (self.work / "authorized_keys").write_text(authorized + "\n")
        (self.work / "sshd_config").write_text(SSHD_CONFIG.format(address=lab.cfg.address, work=self.work))
        self.proc: subprocess.Popen | None = None
        from provisioner.sshkeys import new_keypair
        self._original = new_keypair("root@lab-host")
        self.public = self._original[1]
        self._use(*self._original)

    def _use(self, private: str, public: str) -> None:
        (self.work / "host_key").write_text(private)
        os.chmod(self.work / "host_key", 0o600)
        (self.work / "host_key.pub").write_text(public + "\n")

    def new_key(self) -> None:
        """Another host key (as a reinstalled or impersonated host would have); restore() undoes it."""
        from provisioner.sshkeys import new_keypair
        self._use(*new_keypair("root@impostor"))

    def restore(self) -> None:
        self._use(*self._original)

    def start(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)
        # Its log to a file: a pipe nobody reads fills up after enough sessions (ansible
        # opens many), and sshd then blocks writing to it.
        with (self.work / "sshd.log").open("ab") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.lab.cfg.netns, "/usr/sbin/sshd", "-D", "-e",
                                          "-f", str(self.work / "sshd_config")], stderr=log)
        time.sleep(1)
        assert self.proc.poll() is None, (self.work / "sshd.log").read_text()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()
        self.proc = None


def agent_read(host, guest: str, path: str) -> str | None:
    try:
        handle = host.agent(guest, {"execute": "guest-file-open", "arguments": {"path": path, "mode": "r"}})
    except HostError:
        return None
    data = host.agent(guest, {"execute": "guest-file-read", "arguments": {"handle": handle, "count": 4096}})
    host.agent(guest, {"execute": "guest-file-close", "arguments": {"handle": handle}})
    return base64.b64decode(data["buf-b64"]).decode()


def agent_write(host, guest: str, path: str, text: str) -> None:
    handle = host.agent(guest, {"execute": "guest-file-open", "arguments": {"path": path, "mode": "w"}})
    host.agent(guest, {"execute": "guest-file-write",
                       "arguments": {"handle": handle, "buf-b64": base64.b64encode(text.encode()).decode()}})
    host.agent(guest, {"execute": "guest-file-close", "arguments": {"handle": handle}})


def _lab(**kwargs):
    lab = Lab()
    lab.down()  # a previous run killed mid-way must not be in the way
    try:
        lab.up(**kwargs)
        yield LabHandle(lab)
    finally:
        lab.down()


@pytest.fixture(scope="module")
def lab():
    yield from _lab(nodes=3, racks=2, memory_mib=2048, vcpus=2, disk_gib=20)


@pytest.fixture(scope="module")
def uefi_lab():
    yield from _lab(nodes=1, racks=1, memory_mib=2048, vcpus=2, disk_gib=20, uefi=True)


@pytest.fixture(scope="module")
def rack_lab():
    """Two BIOS nodes in one rack, enrolled to ready."""
    for handle in _lab(nodes=2, racks=1, memory_mib=2048, vcpus=2, disk_gib=20):
        code, out, err = handle.cli("enroll", "--from", str(handle.lab.inventory_file))
        assert code == 0, out + err
        yield handle
