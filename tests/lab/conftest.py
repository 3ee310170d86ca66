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
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner import cli
from provisioner.errors import HostError
from provisioner.lab.lab import Lab
from provisioner.lab.margins import lab_margins
from provisioner.lab.sshd import LabSshd  # noqa: F401 (the lab tests import it from here)
from tests.waiting import note, take, wait_until  # noqa: F401 (the lab tests import wait_until from here)

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
        start = time.monotonic()
        end = start + timeout
        while True:
            doc = self.client.get(f"/v1/nodes/{name}")
            if predicate(doc):
                note(f"{name} ({doc['state']} {doc['step'] or ''})", time.monotonic() - start, timeout)
                return doc
            if time.monotonic() > end:
                raise AssertionError(f"{name} did not get there in {timeout}s: {doc['state']} {doc['step']} "
                                     f"{doc['last_error']}; console: {self.lab.console_log(name)}")
            time.sleep(0.5)

    def log(self, name: str) -> str:
        return (self.data / "logs" / name).read_text()

    def connect(self):
        """The lab's own libvirtd (the caller closes the connection)."""
        return self.lab.connect()

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
        start = time.monotonic()
        end = start + timeout
        while True:
            job = self.client.get(f"/v1/jobs/{job_id}")
            if job["status"] != "running":
                note(f"job {job_id}", time.monotonic() - start, timeout)
                return job
            assert time.monotonic() < end, f"job {job_id} still running after {timeout}s: {job}"
            time.sleep(1)


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


# -- labs carried through several modules, side by side ------------------------------
# Bringing a lab up and down costs little; enrolling, booting and reimaging its nodes is
# what costs. So modules share labs, in groups: each group has a lab of its own (its own
# namespace, subnet, libvirtd and daemon: provisioner/lab/instances.py) and its modules
# run in the order below, each starting from the state the one before left. The groups
# run side by side, one per pytest-xdist worker (`make test-lab`; pytest_xdist_make_scheduler
# below), the longest first; run without xdist, they run one after another.
#   reimage: a mixed lab of four nodes in two racks: rack-1 (lab-r1-n1, lab-r1-n2) BIOS
#     machines behind IPMI BMCs (virtualbmc), rack-2 UEFI machines behind a Redfish BMC
#     (sushy-tools' emulator), lab-r2-n2 with Secure Boot on. enroll (two nodes, one of
#     each kind; a stranger; kill -9 while inspecting) -> reimage (all four, then the
#     rollbacks; the UEFI nodes' firmware state, a boot with the provisioner stopped).
#   guests: one BIOS node (lab-r1-n1), reimaged to an active host, runs nested guests;
#     this machine, registered as a second host, runs the rest.
#   mcast: the same mixed four: multicast (rack-1 and lab-r2-n2 as one batch: three
#     multicast sessions, faults, kill -9 of the daemon; lab-r2-n1 stays ready) -> nightly
#     (rack-1 again, checks; rack-2's lab-r2-n1 still ready).
#   misc: playbooks and guests_libvirt (the lab's namespace, bridge and libvirtd only);
#     then Vagrant (a lab of its own, made by the Vagrantfile) and the guest image (none).
# A module run alone brings its group's lab up itself, and enrolls and reimages what it needs.
FOUR = dict(nodes=4, racks=2, memory_mib=2048, vcpus=2, disk_gib=20, firmware="mixed", bmc="mixed",
            secure_boot="mixed")
# The daemon's deadlines where a group needs them longer than the lab's file has them,
# each at least three times what it was measured to take here (docs/design.md, margins):
# mcast powers a node off mid-write and on again, and its new agent must call home within
# the write's stall deadline (measured up to 48 s under load), and waits for a batch's
# three nodes to join one session (their arrivals measured up to 18 s apart beside the
# other groups). (Nested guests' readiness is the lab file's: provisioner.toml.j2.)
GROUPS: dict[str, tuple[tuple[str, ...], dict[str, Any] | None]] = {
    "reimage": (("test_enroll_lab", "test_reimage"), FOUR),
    "guests": (("test_guests_deploy",), dict(nodes=1, racks=1, memory_mib=2048, vcpus=2, disk_gib=20)),
    "mcast": (("test_multicast", "test_nightly"), dict(FOUR, settings={"timeouts.deploy_stall": "180",
                                                                       "multicast.max_wait": "90"})),
    "misc": (("test_playbooks", "test_guests_libvirt", "test_vagrant_lab", "test_guest_image"),
             dict(nodes=1, racks=1, memory_mib=256, vcpus=1, disk_gib=2)),
}
ORDER = [(group, module) for group, (modules, _shape) in GROUPS.items() for module in modules]


def module_name(item) -> str:
    return item.module.__name__.rsplit(".", 1)[-1]


def group_of(module: str) -> str:
    return next((group for group, m in ORDER if m == module), "misc")


def pytest_xdist_make_scheduler(config, log):
    """xdist sends each group, whole and in order, to one worker: its scope scheduler, with a
    test's scope being its module's group. (xdist's own loadgroup marks a group by renaming
    node ids, which pytest 9 no longer lets a plugin do.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py"))

    return ByGroup(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list) -> None:
    """The groups and their modules in ORDER."""
    def rank(item) -> int:
        name = module_name(item)
        return next((i for i, (_g, m) in enumerate(ORDER) if m == name), len(ORDER))
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
    """Each phase's report carries the largest share of a deadline any wait used in it (the
    test's own waits, and the daemon's steps). A failed lab test carries what the lab saw:
    every node's console tail and the daemon's log tail in the report, and the whole logs
    directory copied to build/lab-failures/<test> (the lab itself is gone once it is taken down)."""
    group = group_of(module_name(item))
    used = take()
    handle = _labs.up.get(group)
    if handle is not None and call.when in ("setup", "call"):
        used += [(m.share, f"{m.what}: {m.seconds:.0f}s of {m.deadline:.0f}s")
                 for m in lab_margins(handle.lab, call.start, call.stop)]
    if used:
        item.user_properties.append(("deadline", max(used)))
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    lab = Lab(group)
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


_module_deadline: dict[str, tuple[float, str]] = {}


def pytest_runtest_logreport(report) -> None:
    module = report.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    _module_seconds[module] = _module_seconds.get(module, 0.0) + report.duration
    for key, value in report.user_properties:
        if key == "deadline":
            fraction, what = value
            if fraction > _module_deadline.get(module, (0.0, ""))[0]:
                _module_deadline[module] = (fraction, what)


def pytest_terminal_summary(terminalreporter) -> None:
    """The lab tier's time per module (setup, calls and teardown; a group's lab bring-up
    counts in the first module that used it, its take-down in the one that ended it) and the
    largest share of a deadline any of its waits used. Modules of different groups ran side
    by side: their times add up to more than the tier's."""
    if not _module_seconds:
        return
    terminalreporter.section("lab time per module, and the largest share of a deadline used")
    for module, seconds in sorted(_module_seconds.items(), key=lambda kv: -kv[1]):
        fraction, what = _module_deadline.get(module, (0.0, "no wait"))
        terminalreporter.write_line(f"{seconds:8.1f}s  {module:28s} {fraction:5.0%}  {what}")
    terminalreporter.write_line(f"{sum(_module_seconds.values()):8.1f}s  in all (side by side)")


class Labs:
    """The labs of this worker's groups: one up at a time (a worker runs its groups one
    after another), each brought up by the first module of its group that asks, taken down
    when another group's module asks, or at the end."""

    def __init__(self) -> None:
        self.up: dict[str, LabHandle] = {}

    def get(self, group: str) -> LabHandle:
        if group not in self.up:
            self.close()
            shape = GROUPS[group][1] or {}
            lab = Lab(group)
            lab.down()  # a previous run killed mid-way must not be in the way
            try:
                lab.up(**shape, database=os.environ.get("PROVISIONER_LAB_DATABASE", "sqlite"))
            except BaseException:
                lab.down()
                raise
            self.up[group] = LabHandle(lab)
        return self.up[group]

    def close(self) -> None:
        while self.up:
            _group, handle = self.up.popitem()
            handle.lab.down()


_labs = Labs()


def _close_shared() -> None:
    _labs.close()


@pytest.fixture(scope="session")
def labs():
    try:
        yield _labs
    finally:
        _labs.close()


@pytest.fixture(scope="module")
def shared_lab(labs, request):
    """The lab of this module's group (its database is SQLite, or PostgreSQL when
    PROVISIONER_LAB_DATABASE=postgresql: CI sets it, .ci/run)."""
    return labs.get(group_of(request.module.__name__.rsplit(".", 1)[-1]))


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
