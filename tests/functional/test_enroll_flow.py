"""Enroll -> inspect -> ready with the real daemon and the real agent over HTTP."""

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import run_agent

MAC = "52:54:00:12:00:01"


def post(url, path, body, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Agent-Token"] = token
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_enroll_inspect_ready_with_the_real_agent(running, workdir):
    code, out, err = running.cli(*running.enroll_args(MAC, "10.0.0.9", "rack-1", "--name", "web-1", "--no-wait"))
    assert code == 0, err
    node = running.wait_state("web-1", {"inspecting"})
    assert node["target_state"] == "ready" and node["deadline"]
    # The node PXE-boots: its script points the kernel at us and passes its MAC.
    with urllib.request.urlopen(f"{running.url}/boot/52-54-00-12-00-01.ipxe") as resp:
        script = resp.read().decode()
    assert "provisioner.mac=52:54:00:12:00:01" in script and "/boot/maintenance/initrd.img" in script
    agent = run_agent(running.url, MAC, workdir / "agent")
    assert agent.returncode == 0, agent.stdout + agent.stderr
    node = running.wait_state("web-1", {"ready"})
    assert node["state"] == "ready" and node["agent"] == "alive"
    assert node["inspection"]["cpu"]["count"] >= 1 and node["hardware"]["memory_mib"] > 0
    code, out, _ = running.cli("events", "web-1")
    for words in ("enrolled in rack-1", "one-time network boot set via IPMI", "powered on via IPMI",
                  "received its token", "inspected:"):
        assert words in out
    code, out, _ = running.cli("nodes", "--rack", "rack-1")
    assert code == 0 and "web-1" in out and "ready" in out
    # The metrics say the same, over TCP with the operator token (and not without it).
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{running.url}/metrics")
    assert refused.value.code == 401
    token = running.settings.operator_token_file.read_text().strip()
    req = urllib.request.Request(f"{running.url}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert value[("provisioner_nodes", (("rack", "rack-1"), ("state", "ready")))] == 1
    assert value[("provisioner_node_transitions_total", (("from_state", "inspecting"), ("to_state", "ready")))] == 1
    assert value[("provisioner_bmc_command_duration_seconds_count",
                  (("command", "set_power"), ("driver", "ipmi")))] >= 1
    assert value[("provisioner_step_duration_seconds_count", (("state", "inspecting"), ("step", "wait-inspection")))] == 1


def test_agent_calls_need_this_boots_token(running, workdir):
    assert running.cli(*running.enroll_args(MAC, "10.0.0.9", "rack-1", "--no-wait"))[0] == 0
    status, doc = post(running.url, "/v1/agent/heartbeat", {})
    assert status == 401 and "without a token" in doc["error"]["message"]
    status, doc = post(running.url, "/v1/agent/heartbeat", {}, token="forged")
    assert status == 401
    status, doc = post(running.url, "/v1/agent/lookup", {"mac": MAC})
    assert status == 200
    token = doc["token"]
    status, doc = post(running.url, "/v1/agent/lookup", {"mac": MAC})
    assert status == 409 and "already issued" in doc["error"]["message"]
    assert post(running.url, "/v1/agent/heartbeat", {}, token=token)[0] == 200
    # A new network boot into the maintenance image voids the old token.
    urllib.request.urlopen(f"{running.url}/boot/52-54-00-12-00-01.ipxe").read()
    assert post(running.url, "/v1/agent/heartbeat", {}, token=token)[0] == 401
    assert post(running.url, "/v1/agent/lookup", {"mac": MAC})[0] == 200
    # The token is stored hashed, never as issued.
    assert token.encode() not in running.settings.db_path.read_bytes()


def test_agent_runs_a_command_once_and_reports_it(running, workdir):
    running.cli(*running.enroll_args(MAC, "10.0.0.9", "rack-1", "--no-wait"))
    assert run_agent(running.url, MAC, workdir / "agent").returncode == 0
    running.wait_state(MAC, {"ready"})
    cmd = running.client.post(f"/v1/nodes/{MAC}/commands", {"command": "reboot"})
    urllib.request.urlopen(f"{running.url}/boot/52-54-00-12-00-01.ipxe").read()  # the agent's new boot
    agent = run_agent(running.url, MAC, workdir / "agent")
    assert "would reboot" in agent.stdout
    assert running.client.get(f"/v1/nodes/{MAC}/commands/{cmd['id']}")["status"] == "done"
    with pytest.raises(Exception, match="unknown agent command"):
        running.client.post(f"/v1/nodes/{MAC}/commands", {"command": "format-disk"})


def test_unknown_mac_gets_no_boot_script_and_no_token(running):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{running.url}/boot/52-54-00-99-99-99.ipxe")
    assert err.value.code == 404
    status, doc = post(running.url, "/v1/agent/lookup", {"mac": "52:54:00:99:99:99"})
    assert status == 404 and "not enrolled" in doc["error"]["message"]
    assert running.client.get("/v1/nodes")["nodes"] == []


def test_operator_api_over_tcp_needs_the_operator_token(running):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{running.url}/v1/nodes")
    assert err.value.code == 401
    token = running.settings.operator_token_file.read_text().strip()
    req = urllib.request.Request(f"{running.url}/v1/nodes", headers={"Authorization": f"Bearer {token}"})
    assert urllib.request.urlopen(req).status == 200
    doc = json.loads(urllib.request.urlopen(f"{running.url}/v1/openapi.json").read())
    assert "post" in doc["paths"]["/v1/nodes"] and "/v1/agent/lookup" in doc["paths"]
    assert doc["paths"]["/v1/nodes"]["get"]["security"] == [{"operatorToken": []}]
