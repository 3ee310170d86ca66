"""The playbooks as a fresh machine runs them: ansible-lint's production profile, and the
checks' results read from the junit callback of Debian's ansible-core (the only
machine-readable results it ships), with a real ansible-playbook run on this machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from provisioner.models import Node
from provisioner.states import State
from provisioner.workflows.checks import ansible_env, play_names, playbook_results

REPO = Path(__file__).resolve().parents[2]


def test_playbooks_pass_ansible_lint_at_the_production_profile():
    lint = Path(sys.executable).parent / "ansible-lint"  # installed by 'make setup' into the venv
    proc = subprocess.run([str(lint), "--offline", "--profile", "production", "--nocolor", "playbooks"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def node(name: str) -> Node:
    return Node(id=1, name=name, mac="52:54:00:00:00:01", rack="rack-1", bmc_address="10.0.0.9", bmc_port=623,
                bmc_username="admin", cipher_suite=17, state=State.ACTIVE)


def test_checks_are_read_from_debian_ansibles_junit_report(tmp_path):
    playbook = tmp_path / "checks.yml"
    playbook.write_text("""
- name: "Local: checks"
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: CPUs
      ansible.builtin.raw: 'echo "2 CPUs (inspection: 2)"'
      changed_when: false
    - name: Disks
      ansible.builtin.raw: 'echo "vda 0 bytes"; exit 1'
      changed_when: false
      ignore_errors: true
      register: disks_check
    - name: Network
      ansible.builtin.raw: echo "ping answered"
      changed_when: false
""")
    inventory = tmp_path / "inventory.json"
    inventory.write_text('{"all": {"hosts": {"lab-r1-n1": {"ansible_python_interpreter": "/usr/bin/python3"}}}}')
    known = tmp_path / "known_hosts"
    known.write_text("")
    out = tmp_path / "out"
    out.mkdir()
    # Debian's ansible-playbook, as the daemon finds it (checks.ansible_playbook), not the venv's.
    proc = subprocess.run(["/usr/bin/ansible-playbook", "-i", str(inventory), str(playbook)],
                          capture_output=True, text=True, env=ansible_env(out, known), timeout=300)
    reports = list(out.glob("*.xml"))
    assert len(reports) == 1, proc.stdout + proc.stderr
    results = playbook_results([node("lab-r1-n1")], reports[0].read_text(), proc, 1.0, play_names(playbook))
    checks = {c["name"]: c for c in results["lab-r1-n1"]}
    assert list(checks) == ["cpus", "disks", "network"]
    assert checks["cpus"]["ok"] and checks["cpus"]["detail"] == "2 CPUs (inspection: 2)"
    assert not checks["disks"]["ok"] and "vda 0 bytes" in checks["disks"]["detail"]
    assert checks["network"]["ok"]


def test_a_playbook_that_cannot_run_fails_every_host_with_its_reason(tmp_path):
    proc = subprocess.CompletedProcess(["ansible-playbook"], 4, "", "ERROR! the playbook could not be found")
    results = playbook_results([node("a"), node("b")], None, proc, 0.5)
    assert results["a"] == results["b"] == [{"name": "playbook", "ok": False, "seconds": 0.5,
                                             "detail": "ansible-playbook failed: ERROR! the playbook could not be found"}]
