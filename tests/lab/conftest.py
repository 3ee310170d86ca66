"""The virtual lab for end-to-end tests: brought up once per module, always taken down."""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml

from provisioner import cli
from provisioner.errors import HostError
from provisioner.lab.lab import Lab
from tests.waiting import wait_until  # noqa: F401 (the lab tests import it from here)

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
        protocol = ["--bmc-driver", "redfish", "--bmc-system", bmc["system"]] if bmc.get("driver") == "redfish" \
            else ["--cipher-suite", "3"]
        return ["enroll", node["mac"], "--name", name, "--rack", node["rack"],
                "--bmc", port or bmc["address"], "--bmc-user", bmc["username"],
                "--bmc-password-file", password_file or bmc["password_file"], *protocol]

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
        last = self.client.get("/v1/jobs?limit=1")["jobs"][-1]["id"]
        job = self.client.get(f"/v1/jobs/{last}")
        return next(m["bytes"] for m in job["nodes"] if m["name"] == name)

    def events(self, name: str, since: float = 0.0) -> list[dict]:
        return [e for e in self.client.get(f"/v1/nodes/{name}/events")["events"] if e["ts"] >= since]

    def ssh(self, name: str, command: str, doc: dict | None = None) -> str:
        """Run a command on a deployed host over SSH (paramiko, from inside the lab's
        namespace), checking the host key the provisioner recorded at deploy time (from
        `doc`, the node as the daemon showed it, when the daemon is not there to ask)."""
        doc = doc or self.client.get(f"/v1/nodes/{name}")
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


def agent_exec(host, guest: str, path: str, *args: str, timeout: float = 30) -> int:
    """Run a program in the guest through its agent; its exit code."""
    pid = host.agent(guest, {"execute": "guest-exec", "arguments": {"path": path, "arg": list(args)}})["pid"]
    end = time.monotonic() + timeout
    while True:
        status = host.agent(guest, {"execute": "guest-exec-status", "arguments": {"pid": pid}})
        if status.get("exited"):
            return int(status.get("exitcode", -1))
        assert time.monotonic() < end, f"{path} {args} did not end in {guest}"
        time.sleep(0.2)


# -- one lab carried through several modules -----------------------------------------
# Bringing a lab up and down costs little; enrolling, booting and reimaging its nodes is
# what costs. So most modules share one mixed lab of four nodes in two racks: rack-1
# (lab-r1-n1, lab-r1-n2) BIOS machines behind IPMI BMCs (virtualbmc), rack-2 UEFI machines
# behind a Redfish BMC (sushy-tools' emulator), lab-r2-n2 with Secure Boot on. They are
# carried in this order, each starting from the state the one before left:
#   playbooks and guests_libvirt (the lab's namespace, bridge and libvirtd only, while no
#   node runs yet) -> enroll (two nodes, one of each kind; a stranger; kill -9 while
#   inspecting) -> reimage (all four, then the rollbacks; the UEFI nodes' firmware state,
#   a boot with the provisioner stopped; lab-r2-n1 ends ready again, lab-r2-n2 powered
#   off) -> multicast (rack-1 and lab-r2-n2 as one batch: three multicast sessions,
#   faults, kill -9 of the daemon; lab-r2-n1 stays ready) -> nightly (rack-1 again,
#   checks; rack-2's lab-r2-n1 still ready) ->
#   guests_deploy (lab-r1-n1 as nightly left it, an active host, runs nested guests; the
#   other nodes that ran as hosts are powered off and forgotten, so that it is the only
#   node host).
# Modules that need a lab of another shape (Vagrant) run after them; only one lab
# can be up at a time, so the shared one is taken down first.
SHARED_ORDER = ("test_playbooks", "test_guests_libvirt", "test_enroll_lab", "test_reimage", "test_multicast",
                "test_nightly", "test_guests_deploy")
SHARED_SHAPE = dict(nodes=4, racks=2, memory_mib=2048, vcpus=2, disk_gib=20, firmware="mixed", bmc="mixed",
                    secure_boot="mixed")
_shared: dict[str, Any] = {}


def pytest_collection_modifyitems(items: list) -> None:
    """Shared-lab modules first, in their order; every other module after them, as found."""
    def rank(item) -> int:
        name = item.module.__name__.rsplit(".", 1)[-1]
        return SHARED_ORDER.index(name) if name in SHARED_ORDER else len(SHARED_ORDER)
    items.sort(key=rank)  # stable: tests keep their order within a module


_module_seconds: dict[str, float] = {}
EVIDENCE = Path(__file__).resolve().parents[2] / "build/lab-failures"


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(none)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed lab test carries what the lab saw: every node's console tail and the
    daemon's log tail in the report, and the whole logs directory copied to
    build/lab-failures/<test> (the lab itself is gone once it is taken down)."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    lab = Lab()
    logs = lab.dir / "logs"
    if not logs.is_dir():
        return
    try:  # every thread's stack into the daemon's log: what a stalled step waits on
        state = lab.load()
        if state is not None and state.daemon_pid:
            os.kill(state.daemon_pid, signal.SIGUSR1)
            time.sleep(0.5)
    except (OSError, ValueError):
        pass
    for console in sorted(logs.glob("*.console.log")):
        report.sections.append((f"console {console.name}", _tail(console, 40)))
    report.sections.append(("daemon log", _tail(logs / "provisioner.log", 60)))
    target = EVIDENCE / item.name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(logs, target, ignore_dangling_symlinks=True, dirs_exist_ok=True)


def pytest_runtest_logreport(report) -> None:
    module = report.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    _module_seconds[module] = _module_seconds.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    """The lab tier's time per module (setup, calls and teardown; the shared lab's bring-up
    counts in the first module that used it, its take-down in the one that ended it)."""
    if not _module_seconds:
        return
    terminalreporter.section("lab time per module")
    for module, seconds in sorted(_module_seconds.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:8.1f}s  {module}")
    terminalreporter.write_line(f"{sum(_module_seconds.values()):8.1f}s  in all")


def _close_shared() -> None:
    gen = _shared.pop("gen", None)
    if gen is not None:
        gen.close()  # runs _lab's finally: lab down


def _lab(**kwargs):
    """A lab of its own for the tests that ask for one; its daemon's database is SQLite, or
    PostgreSQL when PROVISIONER_LAB_DATABASE=postgresql (CI sets it: .ci/run)."""
    kwargs.setdefault("database", os.environ.get("PROVISIONER_LAB_DATABASE", "sqlite"))
    _close_shared()
    lab = Lab()
    lab.down()  # a previous run killed mid-way must not be in the way
    try:
        lab.up(**kwargs)
        yield LabHandle(lab)
    finally:
        lab.down()


@pytest.fixture(scope="session")
def shared_lab():
    """The lab the shared modules carry, brought up by whichever of them runs first and
    taken down before any other lab comes up (or at the end)."""
    gen = _lab(**SHARED_SHAPE)
    handle = next(gen)
    _shared["gen"] = gen
    try:
        yield handle
    finally:
        _close_shared()


def enroll_missing(handle: LabHandle, names: list[str]) -> None:
    """Enroll those of `names` the daemon does not know yet, and wait until each is ready."""
    known = {n["name"] for n in handle.client.get("/v1/nodes")["nodes"]}
    missing = [n for n in names if n not in known]
    for name in missing:
        code, out, err = handle.cli(*handle.enroll_args(name), "--no-wait")
        assert code == 0, out + err
    for name in missing:
        doc = handle.wait(name, lambda d: d["state"] != "inspecting")
        assert doc["state"] == "ready", doc["last_error"]


def import_missing(handle: LabHandle, path: Path, name: str) -> None:
    """The image under `name`, unless a module before this one imported it."""
    names = {i["name"] for i in handle.client.get("/v1/images")["images"]}
    if name not in names:
        code, out, err = handle.cli("image", "import", str(path), "--name", name)
        assert code == 0, out + err


@pytest.fixture
def lab(shared_lab):
    """test_enroll_lab: the shared lab as it comes up, no node enrolled yet."""
    return shared_lab


@pytest.fixture
def rack_lab(shared_lab):
    """rack-1 of the shared lab (lab-r1-n1, lab-r1-n2), enrolled to ready."""
    enroll_missing(shared_lab, ["lab-r1-n1", "lab-r1-n2"])
    return shared_lab
