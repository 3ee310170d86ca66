"""A virtual BMC per lab domain: virtualbmc's vbmcd inside the lab namespace, answering
IPMI on the namespace's loopback and driving libvirt."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

from ..errors import LabError
from . import system


class VirtualBmcs:
    def __init__(self, inside: Callable[[Sequence[str]], list[str]], netns: str, state_dir: Path,
                 log_file: Path) -> None:
        """`inside` makes a command run in the lab, seeing the lab's libvirtd."""
        self.inside = inside
        self.netns = netns
        self.dir = state_dir
        self.conf = state_dir / "virtualbmc.conf"
        self.pid_file = state_dir / "vbmcd.pid"
        self.log_file = log_file
        self.env = {"VIRTUALBMC_CONFIG": str(self.conf)}

    @staticmethod
    def _tool(name: str) -> str:
        """virtualbmc's commands, from the environment we run in: `make setup` installs
        them into the venv, whose bin/ no fresh shell (nor sudo) has on PATH."""
        path = Path(sys.executable).parent / name
        if not path.is_file():
            raise LabError(f"{name} not found next to {sys.executable}: install virtualbmc "
                           "into that environment ('make setup')")
        return str(path)

    def start(self) -> None:
        (self.dir / "domains").mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            "[default]\n"
            f"config_dir = {self.dir / 'domains'}\n"
            f"pid_file = {self.pid_file}\n"
            "server_port = 50891\n"
            "[log]\n"
            f"logfile = {self.log_file}\n"
            "debug = true\n")
        system.run(self.inside([self._tool("vbmcd")]), env=self.env)
        system.wait_for(lambda: bool(self.pids()), 20, "vbmcd to start")

    def add(self, domain: str, port: int, username: str, password: str) -> None:
        vbmc = self._tool("vbmc")
        system.run(self.inside([vbmc, "add", domain, "--port", str(port), "--address", "127.0.0.1",
                                # KEY=VALUE: a generated password may start with '-', which
                                # argparse would take for an option.
                                f"--username={username}", f"--password={password}",
                                "--libvirt-uri", "qemu:///system"]), env=self.env, secrets=[password])
        system.run(self.inside([vbmc, "start", domain]), env=self.env)

    def remove(self, domain: str) -> None:
        vbmc = self._tool("vbmc")
        system.run(self.inside([vbmc, "stop", domain]), env=self.env, check=False)
        system.run(self.inside([vbmc, "delete", domain]), env=self.env)

    def pids(self) -> list[int]:
        """vbmcd's processes (it forks one per BMC; its pid file says 0 after daemonizing)."""
        return system.netns_pids_named(self.netns, b"vbmcd")

    def stop(self) -> None:
        system.stop_pids(self.pids())
