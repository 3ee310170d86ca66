"""The virtual lab for end-to-end tests: brought up once per module, always taken down."""

from __future__ import annotations

import io
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest
import yaml

from provisioner import cli
from provisioner.lab.lab import Lab


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
def host_lab():
    """One BIOS node, enrolled to ready, with the host image in the catalog (two versions)."""
    for handle in _lab(nodes=1, racks=1, memory_mib=2048, vcpus=2, disk_gib=20):
        code, out, err = handle.cli("enroll", "--from", str(handle.lab.inventory_file))
        assert code == 0, out + err
        yield handle
