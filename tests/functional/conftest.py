"""Fixtures that run the real daemon (in-process or as a process), the real agent, and a
real IPMI server, all on loopback."""

from __future__ import annotations

import io
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from provisioner import cli, config
from provisioner.client import Client
from provisioner.daemon import Daemon
from provisioner.errors import ProvisionerError

HERE = Path(__file__).parent


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def workdir():
    # Short path: unix socket paths are limited to 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="pv-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def settings_for(workdir: Path, **changes) -> config.Settings:
    base = dict(server_data_dir=workdir / "data", server_listen="127.0.0.1", server_http_port=0,
                server_tftp_port=free_port(socket.SOCK_DGRAM), server_socket=workdir / "api.sock",
                dhcp_enabled=False, power_driver="fake", power_min_interval=0.0, power_backoff=0.1,
                power_verify_timeout=3.0, boot_artifacts_dir=workdir / "boot",
                timeouts_deadline_check=0.2, agent_heartbeat_interval=0.2)
    base.update(changes)
    return config.Settings(**base)


class Running:
    def __init__(self, daemon: Daemon, workdir: Path) -> None:
        self.daemon = daemon
        self.workdir = workdir
        self.settings = daemon.settings
        self.url = f"http://127.0.0.1:{daemon.http.port}"
        self.client = Client(f"unix://{daemon.settings.server_socket}", timeout=30)
        self.password_file = workdir / "bmc-password"
        self.password_file.write_text("Zq9-unique-bmc-pass\n")

    def cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(["--api", f"unix://{self.settings.server_socket}", *argv])
        return code, out.getvalue(), err.getvalue()

    def enroll_args(self, mac: str, bmc: str = "10.0.0.9", rack: str = "rack-1", *extra: str) -> list[str]:
        return ["enroll", mac, "--bmc", bmc, "--bmc-user", "admin", "--bmc-password-file",
                str(self.password_file), "--rack", rack, *extra]

    def wait_state(self, node: str, states: set[str], timeout: float = 30) -> dict:
        end = time.monotonic() + timeout
        while True:
            doc = self.client.get(f"/v1/nodes/{node}")
            if doc["state"] in states or time.monotonic() > end:
                return doc
            time.sleep(0.1)


@pytest.fixture
def running(workdir):
    daemon = Daemon(settings_for(workdir))
    daemon.start()
    yield Running(daemon, workdir)
    daemon.stop()


def run_agent(url: str, mac: str, state_dir: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real agent, as it runs in the maintenance image, against the daemon."""
    return subprocess.run([sys.executable, "-m", "provisioner.agent", "--api", url, "--mac", mac,
                           "--cmdline", "/dev/null", "--state-dir", str(state_dir), "--no-actions",
                           "--once", *extra], capture_output=True, text=True, timeout=timeout)


class DaemonProcess:
    """`provisioner serve` as its own process, so a test can kill -9 it."""

    def __init__(self, workdir: Path, *sets: str) -> None:
        self.workdir = workdir
        self.sets = sets
        self.proc: subprocess.Popen | None = None
        self.http_port = free_port()
        self.tftp_port = free_port(socket.SOCK_DGRAM)
        self.client = Client(f"unix://{workdir / 'api.sock'}", timeout=10)

    def start(self) -> None:
        args = [sys.executable, "-m", "provisioner", "serve", "--data-dir", str(self.workdir / "data"),
                "--listen", "127.0.0.1", "--http-port", str(self.http_port),
                "--tftp-port", str(self.tftp_port), "--socket", str(self.workdir / "api.sock"),
                "--set", "power.driver=fake", "--set", "dhcp.enabled=false", "--set", "power.min_interval=0",
                "--set", "timeouts.deadline_check=0.2"]
        for item in self.sets:
            args += ["--set", item]
        log = (self.workdir / "daemon.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                self.client.get("/v1/health")
                return
            except ProvisionerError:
                time.sleep(0.1)
        raise RuntimeError((self.workdir / "daemon.log").read_text())

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def daemon_process(workdir):
    procs: list[DaemonProcess] = []

    def make(*sets: str) -> DaemonProcess:
        proc = DaemonProcess(workdir, *sets)
        procs.append(proc)
        return proc

    yield make
    for proc in procs:
        proc.stop()


@pytest.fixture
def loopback_bmc():
    """A real IPMI server on 127.0.0.1; yields (port, user, password)."""
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen([sys.executable, str(HERE / "ipmi_bmc.py"), str(port), "admin", "bmc-pass-1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
    time.sleep(0.2)
    yield port, "admin", "bmc-pass-1"
    proc.kill()
    proc.wait()


@pytest.fixture
def redfish_bmc(workdir):
    """sushy-emulator over TLS on loopback, one fake system; see redfish_bmc.py."""
    from .redfish_bmc import RedfishBmc
    directory = workdir / "redfish"
    directory.mkdir()
    bmc = RedfishBmc(directory)
    yield bmc
    bmc.stop()
