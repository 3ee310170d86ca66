"""The maintenance agent: find the provisioner from the kernel command line, look itself
up by MAC and take this boot's token, report the hardware, then heartbeat and run the
commands it is given, each command id at most once."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, cast

from . import host, inventory
from .protocol import CommandKind, CommandStatus, DeployArgs
from .api import AgentApi, AuthRejected, Refused
from .deploy import Deployer, DeployFailed
from .download import ChecksumMismatch, DownloadFailed

LOG = logging.getLogger("agent")


def kernel_args(text: str) -> dict[str, str]:
    """provisioner.* arguments of a kernel command line, without the prefix."""
    out = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep and key.startswith("provisioner."):
            out[key[len("provisioner."):]] = value
    return out


class CommandLog:
    """Commands already carried out, with what they reported, kept in a file so a
    restarted agent (same boot) never runs one twice and can report it again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            doc = json.loads(path.read_text())
            self.results: dict[str, dict[str, Any]] = doc if isinstance(doc, dict) else {k: {} for k in doc}
        except (OSError, ValueError):
            self.results = {}

    @property
    def done(self) -> set[str]:
        return set(self.results)

    def add(self, command_id: str, report: dict[str, Any] | None = None) -> None:
        self.results[command_id] = report or {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, sort_keys=True))
        os.replace(tmp, self.path)


def system_action(kind: str) -> None:
    """Carry out a power command on this machine (busybox or systemd, whichever is here)."""
    subprocess.run({"poweroff": ["poweroff", "-f"], "reboot": ["reboot", "-f"]}[kind], check=False)


class Agent:
    def __init__(self, api: AgentApi, mac: str, boot: str, state_dir: Path,
                 collect: Callable[[], dict[str, Any]] = inventory.collect,
                 act: Callable[[str], None] = system_action,
                 sleep: Callable[[float], None] = time.sleep,
                 deployer: Deployer | None = None) -> None:
        self.api = api
        self.mac = mac
        self.boot = boot
        self.collect = collect
        self.act = act
        self.sleep = sleep
        self.commands = CommandLog(state_dir / "commands-done.json")
        self.interval = 10.0
        self.deployer = deployer

    def lookup(self) -> None:
        """Get this boot's token; a refusal (e.g. token already issued) is retried slowly,
        since only a new boot or an operator can change it."""
        self.api.token = None
        while True:
            try:
                doc = self.api.call("/v1/agent/lookup", {"mac": self.mac, "boot": self.boot})
                self.api.token = doc["token"]
                self.interval = float(doc.get("heartbeat_interval", self.interval))
                LOG.info("agent: registered as node %s", doc["node"]["name"])
                return
            except Refused as exc:
                LOG.error("agent: lookup refused: %s; asking again in 30s", exc)
                self.sleep(30)

    def inspect(self) -> None:
        data = self.collect()
        LOG.info("agent: reporting %d CPUs, %s MiB, %d disks, %d NICs", data["cpu"]["count"],
                 data["memory"]["total_mib"], len(data["disks"]), len(data["nics"]))
        self.api.call("/v1/agent/inspection", {"inventory": data})

    def run_command(self, cmd: dict[str, Any]) -> None:
        cid, kind = cmd["id"], cmd["kind"]
        if cid in self.commands.done:
            LOG.info("agent: command %s (%s) already done; reporting again", cid, kind)
            report = self.commands.results[cid] or {"status": CommandStatus.DONE, "result": {"repeat": True}}
            self.api.call(f"/v1/agent/commands/{cid}", report)
            return
        if kind == CommandKind.DEPLOY:
            self.deploy(cid, cmd.get("args") or {})
            return
        if kind not in (CommandKind.POWEROFF, CommandKind.REBOOT):
            self.api.call(f"/v1/agent/commands/{cid}", {"status": CommandStatus.FAILED,
                                                         "result": {"error": f"unknown command {kind}"}})
            self.commands.add(cid)
            return
        # Report before acting: after a power-off nobody is left to report.
        self.commands.add(cid)
        self.api.call(f"/v1/agent/commands/{cid}", {"status": CommandStatus.DONE, "result": {"action": kind}})
        LOG.info("agent: carrying out %s (%s)", kind, cid)
        self.act(kind)

    def deploy(self, cid: str, args: dict[str, Any]) -> None:
        """Lay the host down; report progress while it runs, then the outcome (kept, so
        it can be reported again if the daemon missed it)."""
        last = [0.0]

        def progress(doc: dict[str, Any]) -> None:
            if time.monotonic() - last[0] >= 3.0 or doc.get("phase") != "writing":
                last[0] = time.monotonic()
                try:
                    self.api.call(f"/v1/agent/commands/{cid}", {"status": CommandStatus.RUNNING, "result": doc},
                                  max_wait=5)
                except (Refused, AuthRejected):
                    pass

        deployer = self.deployer or Deployer(self.api.base_url, self.api.token)
        deployer.token = self.api.token
        LOG.info("agent: deploy %s: base %s", cid, str(args.get("image", {}).get("sha256", "?"))[:16])
        try:
            # From the daemon that authenticated this boot; a field missing is a KeyError below.
            result = deployer.run(cast(DeployArgs, args), progress)
            report: dict[str, Any] = {"status": CommandStatus.DONE, "result": result}
        except (DeployFailed, ChecksumMismatch, DownloadFailed, KeyError) as exc:
            LOG.error("agent: deploy %s failed: %s", cid, exc)
            report = {"status": CommandStatus.FAILED, "result": {"error": str(exc)}}
        self.commands.add(cid, report)
        self.api.call(f"/v1/agent/commands/{cid}", report)

    def heartbeat_once(self) -> None:
        doc = self.api.call("/v1/agent/heartbeat", {})
        self.interval = float(doc.get("heartbeat_interval", self.interval))
        for cmd in doc.get("commands", []):
            self.run_command(cmd)

    def run(self, once: bool = False) -> None:
        self.lookup()
        while True:
            try:
                self.inspect()
                while True:
                    self.heartbeat_once()
                    if once:
                        return
                    self.sleep(self.interval)
            except AuthRejected as exc:
                LOG.warning("agent: token rejected (%s); looking up again", exc)
                self.lookup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="provisioner-agent")
    parser.add_argument("--cmdline", default="/proc/cmdline", help="where provisioner.* arguments are")
    parser.add_argument("--api", help="override provisioner.api")
    parser.add_argument("--mac", help="override provisioner.mac")
    parser.add_argument("--state-dir", default="/run/provisioner-agent")
    parser.add_argument("--root", default="/", help="inspect this tree instead of /")
    parser.add_argument("--no-actions", action="store_true",
                        help="report power commands without carrying them out (tests)")
    parser.add_argument("--once", action="store_true", help="stop after the first heartbeat")
    parser.add_argument("--host", action="store_true", help="run as the host agent of a deployed host")
    parser.add_argument("--config", default=str(host.DISK / "node/agent.json"),
                        help="the host agent's credential file (--host)")
    parser.add_argument("--disk", help="deploy onto this block device instead of the first disk")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s provisioner-agent: %(message)s")
    if args.host:
        return host.main(Path(args.config), once=args.once)
    try:
        karg = kernel_args(Path(args.cmdline).read_text())
    except OSError:
        karg = {}
    api_url = args.api or karg.get("api")
    mac = args.mac or karg.get("mac")
    if not api_url or not mac:
        LOG.error("agent: no provisioner.api / provisioner.mac on the kernel command line")
        return 2
    agent = Agent(AgentApi(api_url), mac.lower(), karg.get("boot", "?"), Path(args.state_dir),
                  collect=lambda: inventory.collect(Path(args.root)),
                  act=(lambda kind: LOG.info("agent: would %s (--no-actions)", kind))
                  if args.no_actions else system_action,
                  deployer=Deployer(api_url, None, disk_path=args.disk,
                                    netconf={k: karg[k] for k in ("ip", "netmask", "gateway") if k in karg}))
    agent.run(once=args.once)
    return 0
