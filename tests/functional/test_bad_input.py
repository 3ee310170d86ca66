"""Bad input: each case is one clear line and leaves everything as it was."""

import socket

import pytest

from provisioner.daemon import Daemon

from .conftest import Running, free_port, settings_for


def assert_nothing_enrolled(running):
    assert running.client.get("/v1/nodes")["nodes"] == []


def one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_malformed_mac_is_a_usage_error(running):
    code, _, err = running.cli(*running.enroll_args("52:54:00:zz:00:01"))
    assert code == 2 and "malformed MAC" in one_line(err)
    assert_nothing_enrolled(running)


def test_duplicate_mac_changes_nothing(running):
    assert running.cli(*running.enroll_args("52:54:00:00:00:01", "10.0.0.9", "rack-1", "--name", "a",
                                            "--no-inspect"))[0] == 0
    code, _, err = running.cli(*running.enroll_args("52-54-00-00-00-01", "10.0.0.8", "rack-2", "--name", "b"))
    assert code == 1 and "already enrolled as node a" in one_line(err)
    nodes = running.client.get("/v1/nodes")["nodes"]
    assert [(n["name"], n["rack"], n["bmc"]["address"]) for n in nodes] == [("a", "rack-1", "10.0.0.9")]


def test_unknown_node_or_rack(running):
    for argv in (["show", "nope"], ["events", "nope"], ["power", "on", "rack-9"], ["nodes", "--rack", "rack-9"],
                 ["delete", "nope"]):
        code, _, err = running.cli(*argv)
        line = one_line(err)
        assert code == 1, argv
        assert "no " in line and ("nope" in line or "rack-9" in line), line


def test_wrong_bmc_password_refuses_enrollment(running):
    running.password_file.write_text("wrong\n")  # the fake driver refuses this one
    code, _, err = running.cli(*running.enroll_args("52:54:00:00:00:02"))
    assert code == 1 and "refused the credentials" in one_line(err)
    assert_nothing_enrolled(running)


def test_unreachable_bmc_over_real_ipmi(workdir):
    daemon = Daemon(settings_for(workdir, power_driver="ipmi"))
    daemon.start()
    try:
        running = Running(daemon, workdir)
        dead = free_port(socket.SOCK_DGRAM)
        code, _, err = running.cli(*running.enroll_args("52:54:00:00:00:03", f"127.0.0.1:{dead}"))
        assert code == 1 and "did not answer" in one_line(err)
        assert_nothing_enrolled(running)
    finally:
        daemon.stop()


def test_password_file_problems(running, workdir):
    code, _, err = running.cli("enroll", "52:54:00:00:00:04", "--bmc", "10.0.0.9", "--bmc-user", "admin",
                               "--bmc-password-file", str(workdir / "absent"), "--rack", "rack-1")
    assert code == 2 and "cannot read BMC password file" in one_line(err)
    code, _, err = running.cli("enroll", "52:54:00:00:00:04", "--rack", "rack-1")
    assert code == 2 and "--bmc" in one_line(err)
    assert_nothing_enrolled(running)


def test_daemon_not_running_is_one_line(workdir):
    from provisioner import cli
    import io
    from contextlib import redirect_stderr
    err = io.StringIO()
    with redirect_stderr(err):
        code = cli.main(["--api", f"unix://{workdir}/absent.sock", "nodes"])
    assert code == 1 and "is 'provisioner serve' running?" in one_line(err.getvalue())


@pytest.mark.parametrize("body, words", [
    ("not json", "not valid JSON"),
    ('{"mac": "52:54:00:00:00:05", "rack": "rack-1"}', "bmc must be an object"),
    ('{"mac": "52:54:00:00:00:05", "rack": "Rack 1", "bmc": {}}', "invalid rack name"),
    ('{"mac": "52:54:00:00:00:05", "rack": "rack-1", "bmc": {"address": "x", "username": "u", '
     '"password": "p", "cipher_suite": 2}}', "cipher suite 2"),
    ('{"mac": "52:54:00:00:00:05", "rack": "rack-1", "bmc": {"address": "x", "username": "u", '
     '"password": "p", "port": "http"}}', "invalid bmc.port 'http': a port number"),
])
def test_api_validation(running, body, words):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", running.daemon.http.port)
    token = running.settings.operator_token_file.read_text().strip()
    conn.request("POST", "/v1/nodes", body=body, headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    assert resp.status == 400 and words in resp.read().decode()
    assert_nothing_enrolled(running)


def test_a_guest_network_over_the_provisioning_range_keeps_the_daemon_from_starting(tmp_path):
    import subprocess
    import sys
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-m", "provisioner", "serve", "--data-dir", str(data), "--socket",
                           str(tmp_path / "api.sock"), "--set", "network.subnet=10.99.0.0/24",
                           "--set", "network.guest_range=10.99.0.150-10.99.0.160", "--set", "dhcp.interface=lo"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert one_line(proc.stderr) == (
        "error: network.guest_range 10.99.0.150-10.99.0.160 overlaps the provisioning network's DHCP range "
        "(dhcp.range 10.99.0.100-10.99.0.199): guests and nodes would be handed the same addresses; give the "
        "guests addresses outside it")
    assert not data.exists(), "nothing was made"
