"""Reimage jobs through the real daemon and CLI, with the agents' side played over the
real agent and host APIs (the lab tests run the real agents on real nodes): tags as
targets, upgrade-domain batches, claimed nodes, --abort between batches; then guest
placement over the hosts that came back."""

import fcntl
import json
import os
import pty
import re
import shlex
import struct
import sys
import termios
import threading
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import run_agent

MACS = {"web-1": "52:54:00:12:00:01", "web-2": "52:54:00:12:00:02"}


def post(url, path, body, token=None):
    headers = {"Content-Type": "application/json", **({"X-Agent-Token": token} if token else {})}
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def play_deploy(running, name, facts=None, ends="active"):
    """What the maintenance agent and then the host agent do for one deploy."""
    node = running.wait_state(name, {"deploying"})
    end = time.monotonic() + 30
    while running.client.get(f"/v1/nodes/{name}")["step"] != "wait-agent":
        assert time.monotonic() < end, "the deploy never reached wait-agent"
        time.sleep(0.05)
    token = post(running.url, "/v1/agent/lookup", {"mac": MACS[name]})["token"]
    commands = post(running.url, "/v1/agent/heartbeat", {}, token)["commands"]
    deploy = next(c for c in commands if c["kind"] == "deploy")
    args = deploy["args"]
    post(running.url, f"/v1/agent/commands/{deploy['id']}",
         {"status": "done", "result": {"disk": "/dev/vda", "transferred_bytes": args["image"]["size"]}}, token)
    while running.client.get(f"/v1/nodes/{name}")["step"] != "wait-host":
        assert time.monotonic() < end, "the deploy never reached wait-host"
        time.sleep(0.05)
    post(running.url, "/v1/host/heartbeat", {"facts": {"base_sha256": args["image"]["sha256"], **(facts or {})}},
         args["host_agent"]["token"])
    assert running.wait_state(name, {"active", "deploy-failed"})["state"] == ends, node


def last_job_when_ended(running, timeout: float = 30) -> dict:
    job = running.client.get(f"/v1/jobs/{running.client.get('/v1/jobs?limit=1')['jobs'][-1]['id']}")
    end = time.monotonic() + timeout
    while job["status"] == "running":
        assert time.monotonic() < end, f"job {job['id']} still running"
        time.sleep(0.1)
        job = running.client.get(f"/v1/jobs/{job['id']}")
    return job


@pytest.fixture
def fleet(running, workdir):
    """Two ready nodes in one rack, an image in the catalog."""
    for name, mac in MACS.items():
        code, _, err = running.cli(*running.enroll_args(mac, "10.0.0.9", "rack-1", "--name", name, "--no-wait"))
        assert code == 0, err
        running.wait_state(name, {"inspecting"})
        assert run_agent(running.url, mac, workdir / f"agent-{name}").returncode == 0
        assert running.wait_state(name, {"ready"})["state"] == "ready"
    image = workdir / "host.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(image), "64M"], check=True, capture_output=True)
    code, out, err = running.cli("image", "import", str(image), "--name", "host")
    assert code == 0, out + err
    return running


def test_tags_name_targets_and_bad_labels_change_nothing(fleet):
    code, out, err = fleet.cli("label", "web-1", "--tag", "frontend", "--upgrade-domain", "3")
    assert code == 0, err
    assert "tags frontend; upgrade domain 3" in out
    code, out, _ = fleet.cli("nodes", "--tag", "frontend")
    assert "web-1" in out and "web-2" not in out
    # --json after the command as well as before it, at any depth: the same output.
    for before, after in ((("--json", "nodes"), ("nodes", "--json")),
                          (("--json", "show", "web-1"), ("show", "web-1", "--json")),
                          (("--json", "image", "list"), ("image", "list", "--json"))):
        first, second = fleet.cli(*before), fleet.cli(*after)
        assert first[0] == second[0] == 0 and first[1] == second[1], (before, first, second)
        json.loads(first[1])
    code, out, err = fleet.cli("reimage", "frontend", "--image", "host", "--dry-run")
    assert code == 0, err
    assert "1 nodes in 1 batches" in out and "batch 1: web-1" in out
    code, out, _ = fleet.cli("power", "status", "tag:frontend")
    assert code == 0 and "web-1" in out and "web-2" not in out
    for bad, words in ((["--tag", "Bad Tag"], "invalid tag"), (["--tag", "all"], "cannot be a tag"),
                       (["--upgrade-domain", "x"], "must be a number"), ([], "nothing to change")):
        code, _, err = fleet.cli("label", "web-1", *bad)
        assert code == 2 and words in err and "Traceback" not in err, err
    node = fleet.client.get("/v1/nodes/web-1")
    assert node["tags"] == ["frontend"] and node["upgrade_domain"] == 3
    code, out, _ = fleet.cli("label", "web-1", "--untag", "frontend", "--upgrade-domain", "auto")
    assert code == 0 and "tags -; upgrade domain auto" in out
    code, _, err = fleet.cli("reimage", "frontend", "--dry-run")
    assert code != 0 and "no node, rack or tag named 'frontend'" in err


def test_abort_stops_a_job_between_batches(fleet):
    code, out, err = fleet.cli("reimage", "rack-1", "--image", "host", "--no-wait")
    assert code == 0, err
    assert "batch 1: web-1" in out and "batch 2: web-2" in out
    # The nodes are claimed: nothing else may touch them while the job runs.
    code, out, _ = fleet.cli("power", "off", "web-2")
    assert code != 0 and "part of job" in out
    code, out, err = fleet.cli("reimage", "--abort")
    assert code == 0 and "abort requested" in out, err
    play_deploy(fleet, "web-1")  # the node already under way finishes
    job = last_job_when_ended(fleet)
    assert job["status"] == "aborted"
    assert [(m["name"], m["status"]) for m in job["nodes"]] == [("web-1", "done"), ("web-2", "skipped")]
    assert fleet.client.get("/v1/nodes/web-2")["state"] == "ready"
    assert fleet.client.get("/v1/nodes/web-2")["job_id"] is None  # released
    code, out, _ = fleet.cli("job", str(job["id"]))
    assert code == 0 and "aborted" in out


def test_a_reimage_runs_batch_after_batch_to_active(fleet):
    code, out, err = fleet.cli("reimage", "rack-1", "--image", "host", "--no-wait")
    assert code == 0, err
    play_deploy(fleet, "web-1")
    play_deploy(fleet, "web-2")
    job = last_job_when_ended(fleet)
    assert job["status"] == "done"
    first, second = job["nodes"]
    assert first["ended_at"] <= second["started_at"]
    assert first["bytes"] == second["bytes"] > 0
    # No multicast session (this daemon has no provisioning interface): said once.
    assert job["stats"]["notes"] == ["batch 1: multicast: no interface on the provisioning network: HTTP"]


def test_a_batch_without_a_multicast_network_or_with_it_turned_off_goes_over_http(fleet):
    """This daemon has no interface on the provisioning network (its DHCP is off, and no
    interface holds dhcp.range): a two-node batch says so once and uses HTTP; with
    --no-multicast the job says that instead. No agent is offered a session."""
    for extra, note in (([], "batch 1: multicast: no interface on the provisioning network: HTTP"),
                        (["--no-multicast"], "multicast off for this job (--no-multicast): HTTP")):
        code, out, err = fleet.cli("reimage", "rack-1", "--image", "host", "--max-unavailable", "100%",
                                   "--no-wait", *extra)
        assert code == 0, err
        play_deploy(fleet, "web-1")
        play_deploy(fleet, "web-2")
        job = last_job_when_ended(fleet)
        assert job["status"] == "done" and job["stats"]["notes"] == [note], job["stats"]
        assert job["stats"].get("multicast") is None and job["multicast_sessions"] == []
        code, out, _ = fleet.cli("job", str(job["id"]))
        assert note in out, out


ROLES = """
roles:
  - name: web
    base: guest
    vcpus: 1
    memory_mib: 256
    count: 3
    user_data: web.j2
  - name: worker
    base: guest
    vcpus: 2
    memory_mib: 512
    count: 1
"""


def test_deploy_dry_run_places_guests_and_bad_roles_files_change_nothing(fleet, workdir):
    code, _, err = fleet.cli("reimage", "rack-1", "--image", "host", "--max-unavailable", "100%", "--no-wait")
    assert code == 0, err
    # 127.0.0.9: nothing there answers as these hosts (no sshd, or one with another key).
    hardware = {"cpu": {"count": 4}, "memory": {"usable_mib": 4096}, "address": "127.0.0.9"}
    play_deploy(fleet, "web-1", hardware)
    play_deploy(fleet, "web-2", hardware)
    image = workdir / "guest.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(image), "32M"], check=True, capture_output=True)
    assert fleet.cli("image", "import", str(image), "--name", "guest")[0] == 0
    (workdir / "web.j2").write_text("#cloud-config\nhostname: {{ guest.name }}\n")
    roles = workdir / "roles.yaml"
    roles.write_text(ROLES)
    code, out, err = fleet.cli("deploy", str(roles), "--dry-run")
    assert code == 0, err
    assert "hosts: web-1 (rack-1, 4 cores, 4096 MiB), web-2 (rack-1, 4 cores, 4096 MiB)" in out
    assert "4 to add, 0 to remove, 0 to roll, 0 to repair, 0 unchanged (dry run: nothing changed)" in out
    code, out, _ = fleet.cli("--json", "deploy", str(roles), "--dry-run")
    plan = json.loads(out)
    assert {g["action"] for g in plan["guests"]} == {"add"}
    cores = [(g["host"], c) for g in plan["guests"] for c in g["cores"]]
    assert len(cores) == len(set(cores)) and all(c != 0 for _, c in cores), "a core given twice, or the host's"
    assert {g["host"] for g in plan["guests"] if g["role"] == "web"} == {"web-1", "web-2"}
    assert all(g["base"] == "guest:1" for g in plan["guests"])

    for text, words in ((ROLES.replace("base: guest\n    vcpus: 2", "base: nope\n    vcpus: 2"),
                         "role worker: unknown image 'nope'"),
                        (ROLES.replace("vcpus: 2", "vcpus: 8"), "role worker needs 8 cores and 512 MiB per guest"),
                        (ROLES.replace("name: worker", "name: web"), "role 'web' is defined twice"),
                        (ROLES + "  - [", "invalid YAML at line"),
                        (ROLES.replace("web.j2", "missing.j2"), "cannot read")):
        roles.write_text(text)
        code, out, err = fleet.cli("deploy", str(roles), "--dry-run")
        assert code == 2 and words in err and "Traceback" not in err, (words, err)
    roles.write_text(ROLES)
    code, _, err = fleet.cli("deploy", str(roles))
    assert code == 1 and "host web-1 (127.0.0.9)" in err and "nothing was changed" in err, err
    assert fleet.cli("--json", "guests")[1].strip() == "[]"
    assert json.loads(fleet.cli("--json", "job")[1])[-1]["kind"] != "deploy", "no deploy job may start"


def test_guest_and_host_commands_refuse_what_does_not_exist(fleet):
    for argv, code, words in ((("guest", "show", "nope"), 1, "no guest 'nope'"),
                              (("guest", "reset", "nope"), 1, "no guest 'nope'"),
                              (("guest", "console", "nope"), 1, "no guest 'nope'"),
                              (("guest", "delete", "nope"), 1, "no guest 'nope'"),
                              (("host", "remove", "nope"), 1, "no registered host 'nope'"),
                              (("host", "gc", "nope"), 1, "no host 'nope'"),
                              (("host", "add", "kvm-1", "bad address!", "--rack", "rack-1", "--host-key",
                                "ssh-ed25519 AAAA"), 2, "invalid host address"),
                              (("host", "add", "kvm-1", "192.0.2.1", "--rack", "rack-1", "--host-key", "nonsense"),
                               2, "give the host's SSH public host key"),
                              (("host", "add", "web-1", "192.0.2.1", "--rack", "rack-1", "--host-key",
                                "ssh-ed25519 AAAA"), 1, "already exists")):
        rc, out, err = fleet.cli(*argv)
        assert rc == code and words in err and "Traceback" not in err, (argv, rc, err)
    assert all(h["kind"] == "node" for h in json.loads(fleet.cli("--json", "host", "list")[1])), \
        "no refused host may be recorded"
    rc, out, _ = fleet.cli("host", "ssh-key")
    assert rc == 0 and out.startswith("ssh-ed25519 ") and "PRIVATE" not in out


def test_a_secure_boot_node_is_kept_so_and_a_host_that_booted_without_it_fails(running, workdir):
    """The fake BMC says Secure Boot is on at enrollment: maintenance boots switch it off,
    the disk boot on again; a host that reports it came up without it fails its deploy."""
    fake = running.daemon.svc.conductor.power.driver
    fake.secure_boot["10.0.0.9:623"] = True
    name, mac = "web-1", MACS["web-1"]
    code, _, err = running.cli(*running.enroll_args(mac, "10.0.0.9", "rack-1", "--name", name, "--no-wait"))
    assert code == 0, err
    assert running.wait_state(name, {"inspecting"})["secure_boot"] is True
    assert run_agent(running.url, mac, workdir / "agent").returncode == 0
    assert running.wait_state(name, {"ready"})["state"] == "ready"
    assert fake.secure_boot["10.0.0.9:623"] is False  # off for the maintenance image
    image = workdir / "host.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(image), "64M"], check=True, capture_output=True)
    assert running.cli("image", "import", str(image), "--name", "host")[0] == 0
    code, out, err = running.cli("reimage", name, "--image", "host", "--no-wait")
    assert code == 0, out + err
    play_deploy(running, name, facts={"secure_boot": False}, ends="deploy-failed")
    doc = running.client.get(f"/v1/nodes/{name}")
    assert doc["state"] == "deploy-failed" and "Secure Boot off" in doc["last_error"], doc
    assert fake.secure_boot["10.0.0.9:623"] is True  # the disk boot had switched it on
    assert last_job_when_ended(running)["status"] == "failed"
    code, out, err = running.cli("reimage", name, "--image", "host", "--no-wait")
    assert code == 0, out + err
    play_deploy(running, name, facts={"secure_boot": True})
    code, out, _ = running.cli("show", name)
    assert "Secure Boot" in out


def _reimage_cli(fleet, name: str, tty: bool) -> str:
    """`provisioner reimage NAME` as a process, its output on a pseudo-terminal or a pipe,
    while the test plays the node's agents; what it printed."""
    argv = [sys.executable, "-m", "provisioner", "--api", f"unix://{fleet.settings.server_socket}",
            "reimage", name, "--image", "host"]
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color" if tty else "dumb"}
    if not tty:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        play_deploy(fleet, name)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        return out.decode()
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: _drain(leader, chunks), daemon=True)
    reader.start()
    play_deploy(fleet, name)
    assert proc.wait(timeout=60) == 0, b"".join(chunks)
    reader.join(timeout=10)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def _drain(fd: int, chunks: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the process ended: EIO on the leader
            return
        if not data:
            return
        chunks.append(data)


def test_progress_is_a_live_table_on_a_terminal_and_plain_lines_otherwise(fleet):
    on_terminal = _reimage_cli(fleet, "web-1", tty=True)
    # rich redraws the table in place: the cursor goes back up over it, lines are erased.
    assert "\x1b[2K" in on_terminal and re.search(r"\x1b\[\d*A", on_terminal), on_terminal[-800:]
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", on_terminal)
    assert re.search(r"member\s+where\s+status\s+detail\s+progress", text) and "web-1   rack-1  done" in text, text
    assert not re.search(r"^\[\s*\d+\.\ds\] web-1", on_terminal, re.M), "no plain progress lines on a terminal"
    piped = _reimage_cli(fleet, "web-2", tty=False)
    assert "\x1b[" not in piped, "no terminal codes in a log"
    assert re.search(r"^\[\s*\d+\.\ds\] web-2\s+done\s+active", piped, re.M), piped


def _complete(fleet, line: str) -> list[str]:
    """What bash offers for the last word of `line` with our completion script loaded."""
    exe = str(Path(sys.executable).parent / "provisioner")
    words = [exe, "--api", f"unix://{fleet.settings.server_socket}", *line.split(" ")]
    script = subprocess.run([exe, "completion", "bash"], capture_output=True, text=True, check=True).stdout
    probe = (script + "\nCOMP_WORDS=(" + " ".join(shlex.quote(w) for w in words) + ")\n"
             f"COMP_CWORD={len(words) - 1}\n_provisioner\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return [w for w in done.stdout.splitlines() if w]


def test_bash_completion_names_come_from_the_daemon(fleet):
    assert _complete(fleet, "sh") == ["show"]
    assert _complete(fleet, "show we") == ["web-1", "web-2"]
    assert _complete(fleet, "reimage ") == ["all", "rack-1", "web-1", "web-2"]
    assert _complete(fleet, "reimage web-1 --im") == ["--image"]
    assert _complete(fleet, "reimage web-1 --image h") == ["host", "host:1"]
    assert _complete(fleet, "image show ") == ["host", "host:1"]
    assert _complete(fleet, "nodes --state re") == ["ready"]
    assert _complete(fleet, "image ") == ["import", "list", "remove", "show"]
    # No daemon there: no names, and not a word of error in the command line.
    words = [str(Path(sys.executable).parent / "provisioner"), "--api", "unix:///nonexistent.sock", "complete",
             "node", ""]
    done = subprocess.run(words, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
