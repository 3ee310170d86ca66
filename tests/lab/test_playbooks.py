"""playbooks/install.yml for real: ansible-playbook over SSH, from inside the lab's
namespace, into this machine's sshd on the lab bridge (a Debian management host, which is
what the playbook is for). It installs the provisioner from the wheelhouse into a scratch
prefix, configures it, starts it as a service (start-stop-daemon: no systemd here), and the
daemon answers; a second run changes nothing. (playbooks/checks.yml runs for real in
test_nightly.py, against reimaged lab hosts.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


from provisioner import config
from provisioner.client import Client
from provisioner.sshkeys import new_keypair

from .conftest import LabSshd

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = REPO / "build/wheelhouse"
SERVICE = "provisioner-playbook-test"


def test_install_playbook_installs_configures_and_starts_the_service(shared_lab):
    lab = shared_lab  # its namespace and bridge only
    assert any(WHEELHOUSE.glob("provisioner-*.whl")), "no wheelhouse: 'make wheelhouse' (make test-lab does)"
    work = Path(tempfile.mkdtemp(prefix="provisioner-playbook-"))
    pidfile = Path(f"/run/{SERVICE}.pid")
    private, public = new_keypair("ansible@controller")
    key = work / "id_ed25519"
    key.write_text(private)
    os.chmod(key, 0o600)
    sshd = LabSshd(lab.lab, public)
    address = lab.lab.cfg.address
    (work / "known_hosts").write_text(f"{address} {sshd.public}\n")
    root = work / "target"
    variables = {
        "provisioner_wheelhouse": str(WHEELHOUSE), "provisioner_prefix": str(root / "opt"),
        "provisioner_config_dir": str(root / "etc"), "provisioner_data_dir": str(root / "data"),
        "provisioner_socket": str(root / "run/api.sock"), "provisioner_http_port": 8181,
        "provisioner_tftp_port": 6969, "provisioner_dhcp_enabled": False, "provisioner_service": SERVICE,
        "provisioner_unit_dir": str(root / "units"), "provisioner_power_cipher_suite": 3,
        "provisioner_nightly_pool": "rack-1", "provisioner_nightly_args": "--image host"}
    (work / "vars.json").write_text(json.dumps(variables))
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_RETRY_FILES_ENABLED": "False",
           "ANSIBLE_LOCAL_TEMP": str(work / "tmp"), "ANSIBLE_REMOTE_TEMP": str(work / "remote-tmp"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PIPELINING": "True",
           "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={work / 'known_hosts'} -o StrictHostKeyChecking=yes "
                               "-o ControlMaster=no -o BatchMode=yes"}

    def playbook() -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", lab.lab.cfg.netns, "ansible-playbook", "-i", f"{address},",
                               "-u", "root", "--private-key", str(key), "-e", f"@{work / 'vars.json'}",
                               str(REPO / "playbooks/install.yml")],
                              capture_output=True, text=True, env=env, timeout=900)

    try:
        sshd.start()
        first = playbook()
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
        # Installed from the wheels, configured as asked, and running: it answers on its socket.
        assert (root / "opt/bin/provisioner").exists()
        settings = config.load(root / "etc/provisioner.toml", environ={})
        assert settings.server_http_port == 8181 and not settings.dhcp_enabled and settings.power_cipher_suite == 3
        health = Client(f"unix://{root / 'run/api.sock'}", timeout=10).get("/v1/health")
        assert health["status"] == "ok"
        unit = (root / "units" / f"{SERVICE}.service").read_text()
        assert f"ExecStart={root / 'opt/bin/provisioner'} --config {root / 'etc/provisioner.toml'} serve" in unit
        assert "UDP 67" in (root / "etc/NOTES").read_text()
        nightly = (root / "units/provisioner-nightly.service").read_text()
        assert f"{root / 'opt/bin/provisioner'} --config {root / 'etc/provisioner.toml'} nightly rack-1 " \
               "--image host --report" in nightly
        assert "OnCalendar=*-*-* 02:00:00" in (root / "units/provisioner-nightly.timer").read_text()
        assert "Open on the provisioning network" in first.stdout
        # Again: nothing to change, and the same daemon still runs.
        pid = int(pidfile.read_text())
        second = playbook()
        assert second.returncode == 0, second.stdout[-4000:]
        recap = re.search(r"changed=(\d+)", second.stdout)
        assert recap and recap.group(1) == "0", second.stdout[-3000:]
        assert int(pidfile.read_text()) == pid
    finally:
        sshd.stop()
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
                time.sleep(1)
            except (ProcessLookupError, ValueError):
                pass
            pidfile.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
