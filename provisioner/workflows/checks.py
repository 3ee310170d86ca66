"""Acceptance checks on deployed hosts, the nightly run's second half: is each host what
its inspection said, and usable? Built in (over SSH with paramiko, one session per host),
or an Ansible playbook of the operator's (playbooks/checks.yml is ours), run against the
same hosts with the same key and the recorded host keys.

A check is {name, ok, detail, seconds}; a host that cannot be checked at all gets one
failed check, "reachable", that says why."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import yaml

from ..config import Settings
from ..errors import InvalidInput, ProvisionerError
from ..hypervisor import ssh
from ..models import Node
from ..sshkeys import operator_key
from ..states import State
from ..store import Store

Check = dict[str, Any]


def _check(name: str, fn: Callable[[], tuple[bool, str]]) -> Check:
    start = time.monotonic()
    try:
        ok, detail = fn()
    except (ProvisionerError, OSError, ValueError, KeyError) as exc:
        ok, detail = False, str(exc)
    return {"name": name, "ok": ok, "detail": detail, "seconds": round(time.monotonic() - start, 2)}


def expectations(node: Node) -> dict[str, Any]:
    """What the host should show: the inspection's CPUs, memory and disks."""
    hw = node.hardware
    if hw is None:
        return {"cpus": None, "memory_mib": None, "disks": {}}
    return {"cpus": hw.cpus, "memory_mib": hw.memory_mib,
            "disks": {d.name: d.size_bytes for d in hw.disks if d.size_bytes}}


class HostChecks:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.key_file = operator_key(settings.data_dir)[0]

    def run(self, names: list[str], playbook: str | None = None) -> dict[str, list[Check]]:
        nodes = [self.store.get_node(n) for n in names]
        if playbook is not None and not Path(playbook).is_file():
            raise InvalidInput(f"no playbook at {playbook} (on the daemon's machine)")
        results: dict[str, list[Check]] = {}
        ready = []
        for node in nodes:
            why = self._not_checkable(node)
            if why:
                results[node.name] = [{"name": "reachable", "ok": False, "detail": why, "seconds": 0.0}]
            else:
                ready.append(node)
        if playbook is not None:
            results.update(self._playbook(ready, Path(playbook)))
        elif ready:
            with ThreadPoolExecutor(max_workers=min(8, len(ready))) as pool:
                for node, checks in zip(ready, pool.map(self._builtin, ready)):
                    results[node.name] = checks
        return {n.name: results[n.name] for n in nodes}

    @staticmethod
    def _not_checkable(node: Node) -> str:
        if node.state != State.ACTIVE:
            return f"{node.name} is {node.state.value}, not active: {node.last_error or 'not deployed'}"
        if not node.host_key or node.facts is None or not node.facts.address:
            return f"{node.name} has not reported as a host (no address or SSH host key)"
        return ""

    # -- built in ------------------------------------------------------------
    def _builtin(self, node: Node) -> list[Check]:
        address = str(node.facts.address if node.facts else "")
        try:
            session = ssh.connect(node.name, address, 22, node.host_key or "", self.key_file)
        except ProvisionerError as exc:
            return [{"name": "reachable", "ok": False, "detail": str(exc), "seconds": 0.0}]
        want = expectations(node)

        def sh(command: str) -> str:
            code, out = session.run(command)
            if code != 0:
                raise ValueError(f"'{command}' exited {code}: {out.strip()[-200:]}")
            return out

        def cpus() -> tuple[bool, str]:
            seen = int(sh("grep -c ^processor /proc/cpuinfo").strip())
            return seen == want["cpus"], f"{seen} CPUs (inspection: {want['cpus']})"

        def memory() -> tuple[bool, str]:
            # The kernel keeps some memory for itself: MemTotal is a little below the
            # inspected size. Within 10% is the same machine; a missing DIMM is not.
            kib = int(sh("grep ^MemTotal: /proc/meminfo").split()[1])
            seen, inspected = kib // 1024, want["memory_mib"]
            ok = isinstance(inspected, int) and 0.9 * inspected <= seen <= inspected
            return ok, f"{seen} MiB usable (inspection: {inspected} MiB)"

        def disks() -> tuple[bool, str]:
            wrong, shown = [], []
            for name, size in sorted(want["disks"].items()):
                out = sh(f"cat /sys/block/{shlex.quote(name)}/size 2>/dev/null || echo missing").strip()
                seen = int(out) * 512 if out.isdigit() else None
                shown.append(f"{name} {seen if seen is not None else 'missing'}")
                if seen != size:
                    wrong.append(f"{name}: {'missing' if seen is None else seen} bytes, inspection {size}")
            return not wrong and bool(want["disks"]), "; ".join(wrong) or ", ".join(shown) or "no disks inspected"

        def hypervisor() -> tuple[bool, str]:
            caps = sh("virsh -c qemu:///system capabilities")
            kinds = sorted({t for t in ("kvm", "qemu") if f"<domain type='{t}'" in caps})
            return bool(kinds), f"libvirtd answers; domain types {', '.join(kinds) or 'none'}"

        def network() -> tuple[bool, str]:
            # The address this session comes from is the provisioner's, as the host sees it.
            peer = sh("echo $SSH_CONNECTION").split()[0]
            code, out = session.run(f"ping -c 1 -W 3 {shlex.quote(peer)}")
            return code == 0, f"ping {peer}: " + ("answered" if code == 0 else out.strip()[-120:])

        try:
            return [_check("cpus", cpus), _check("memory", memory), _check("disks", disks),
                    _check("hypervisor", hypervisor), _check("network", network)]
        finally:
            session.close()

    # -- a playbook ----------------------------------------------------------
    def _playbook(self, nodes: list[Node], playbook: Path) -> dict[str, list[Check]]:
        if not nodes:
            return {}
        with tempfile.TemporaryDirectory(prefix="provisioner-checks-") as tmp:
            known = Path(tmp) / "known_hosts"
            inventory: dict[str, Any] = {"all": {"hosts": {}}}
            lines = []
            for node in nodes:
                address = str(node.facts.address if node.facts else "")
                lines.append(f"{address} {' '.join((node.host_key or '').split()[:2])}")
                want = expectations(node)
                inventory["all"]["hosts"][node.name] = {
                    "ansible_host": address, "ansible_user": "root",
                    "expected_cpus": want["cpus"], "expected_memory_mib": want["memory_mib"],
                    "expected_disks": want["disks"]}
            known.write_text("\n".join(lines) + "\n")
            inv_file = Path(tmp) / "inventory.json"
            inv_file.write_text(json.dumps(inventory))
            env = ansible_env(Path(tmp), known)
            start = time.monotonic()
            try:
                proc = subprocess.run([self.settings.checks_ansible_playbook, "-i", str(inv_file),
                                       "--private-key", str(self.key_file), str(playbook)],
                                      capture_output=True, text=True, env=env, timeout=1800)
            except FileNotFoundError:
                raise InvalidInput(f"{self.settings.checks_ansible_playbook} is not installed on the "
                                   "daemon's machine (Debian: ansible-core)") from None
            took = time.monotonic() - start
            reports = sorted(Path(tmp).glob("*.xml"))
            report = reports[-1].read_text() if reports else None
        return playbook_results(nodes, report, proc, took, play_names(playbook))


def play_names(playbook: Path) -> list[str]:
    """The names the junit callback gives the playbook's plays (their hosts when unnamed)."""
    try:
        doc = yaml.safe_load(playbook.read_text())
    except (OSError, yaml.YAMLError):
        return []
    plays = doc if isinstance(doc, list) else []
    return [str(p.get("name") or p.get("hosts") or "") for p in plays if isinstance(p, dict)]


def ansible_env(tmp: Path, known_hosts: Path) -> dict[str, str]:
    """ansible-playbook's environment for checks: results as a JUnit file in `tmp` (Debian's
    ansible-core has no json stdout callback: that lives in a collection it does not ship),
    an ignored failure counted as a failure, only the recorded host keys trusted, and one SSH
    session per task (pipelining: the module goes over the session's stdin, no temp files)."""
    return {**os.environ, "ANSIBLE_CALLBACKS_ENABLED": "junit", "JUNIT_OUTPUT_DIR": str(tmp),
            "ANSIBLE_PIPELINING": "True",
            "JUNIT_FAIL_ON_IGNORE": "true", "JUNIT_HIDE_TASK_ARGUMENTS": "true",
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_LOCAL_TEMP": str(tmp),
            "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes "
                                "-o ControlMaster=no -o BatchMode=yes"}


def playbook_results(nodes: list[Node], report: str | None, proc: subprocess.CompletedProcess[str],
                     took: float, plays: tuple[str, ...] | list[str] = ()) -> dict[str, list[Check]]:
    """Checks from the junit callback's report: one per task and host, named after the task
    in lower case (a task "CPUs" is the check "cpus", as the built-in checks are named)."""
    def failed_all(detail: str) -> dict[str, list[Check]]:
        return {n.name: [{"name": "playbook", "ok": False, "detail": detail, "seconds": round(took, 2)}]
                for n in nodes}

    why = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
    if report is None:
        return failed_all(f"ansible-playbook failed: {why[0]}")
    try:
        suites = ET.fromstring(report)
    except ET.ParseError as exc:
        return failed_all(f"ansible-playbook's report is not XML ({exc}): {why[0]}")
    results: dict[str, list[Check]] = {n.name: [] for n in nodes}
    for case in suites.iter("testcase"):
        match = re.fullmatch(r"\[([^\]]+)\] (.*)", case.get("name", ""), re.DOTALL)
        if match is None or match[1] not in results or case.find("skipped") is not None:
            continue
        # "PLAY: TASK": the play's name is one of the playbook's, when it has several.
        task = next((match[2][len(play) + 2:] for play in sorted(plays, key=len, reverse=True)
                     if match[2].startswith(f"{play}: ")), match[2].split(": ", 1)[-1])
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        text = (problem.text if problem is not None else case.findtext("system-out")) or ""
        try:
            result = json.loads(text)
        except ValueError:
            result = {}
        if not isinstance(result, dict):
            result = {}
        # A raw task's own words are its output; a module's, its msg.
        detail = str(result.get("stdout") or "").strip() or str(result.get("msg") or "").strip() \
            or (problem.get("message", "") if problem is not None else "") \
            or ("ok" if problem is None else "failed")
        try:
            seconds = round(float(case.get("time", "0")), 2)
        except ValueError:
            seconds = 0.0
        results[match[1]].append({"name": task.lower(), "ok": problem is None, "detail": detail[-500:],
                                  "seconds": seconds})
    for node in nodes:
        if not results[node.name]:
            results[node.name] = [{"name": "playbook", "ok": False, "seconds": round(took, 2),
                                   "detail": f"the playbook ran no task on it (exit {proc.returncode}: {why[0]})"}]
    return results
