"""A daemon killed mid-operation loses nothing; BMC passwords never show."""

import json
import sqlite3
import time

from .conftest import run_agent

MAC = "52:54:00:34:00:01"
PASSWORD = "Zq9-unique-bmc-pass"


def enroll(client, name="n1", mac=MAC):
    return client.post("/v1/nodes", {"mac": mac, "rack": "rack-1", "name": name, "bmc": {
        "address": "10.0.0.9", "username": "admin", "password": PASSWORD}})


def wait_for(client, node, predicate, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        doc = client.get(f"/v1/nodes/{node}")
        if predicate(doc):
            return doc
        time.sleep(0.1)
    raise AssertionError(f"node {node} never got there: {doc}")


def test_kill9_while_inspecting_then_the_node_finishes(daemon_process, workdir):
    daemon = daemon_process()
    daemon.start()
    enroll(daemon.client)
    wait_for(daemon.client, "n1", lambda d: d["step"] == "wait-agent")
    daemon.kill9()
    daemon.start()
    node = daemon.client.get("/v1/nodes/n1")
    assert node["state"] == "inspecting" and node["step"] == "wait-agent"
    events = [e["event"] for e in daemon.client.get("/v1/nodes/n1/events")["events"]]
    assert events[-1] == "resume"
    agent = run_agent(f"http://127.0.0.1:{daemon.http_port}", MAC, workdir / "agent")
    assert agent.returncode == 0, agent.stdout
    assert wait_for(daemon.client, "n1", lambda d: d["state"] == "ready")["agent"] == "alive"


def test_a_deadline_that_passed_while_the_daemon_was_down_fails_the_node(daemon_process):
    daemon = daemon_process("timeouts.agent_boot=1.5")
    daemon.start()
    enroll(daemon.client)
    wait_for(daemon.client, "n1", lambda d: d["step"] == "wait-agent")
    daemon.kill9()
    time.sleep(2)
    daemon.start()
    node = wait_for(daemon.client, "n1", lambda d: d["state"] == "inspect-failed")
    assert "step wait-agent (waiting for the agent to boot) timed out" in node["last_error"]
    assert daemon.client.get("/v1/nodes")["nodes"][0]["state"] == "inspect-failed"


def test_bmc_passwords_are_never_shown_or_stored_in_plain_text(running, workdir):
    code, out, err = running.cli(*running.enroll_args(MAC, "10.0.0.9", "rack-1", "--name", "n1", "--no-wait"))
    assert code == 0
    run_agent(running.url, MAC, workdir / "agent")
    outputs = [out, err]
    for argv in (["nodes"], ["show", "n1"], ["events", "n1"], ["--json", "nodes"], ["--json", "show", "n1"],
                 ["--json", "events", "n1"], ["power", "status", "n1"]):
        code, out, err = running.cli(*argv)
        outputs += [out, err]
    outputs.append(json.dumps(running.client.get("/v1/nodes")))
    for text in outputs:
        assert PASSWORD not in text
    running.daemon.stop()
    data = running.settings.data_dir
    for path in [*data.rglob("*")]:
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    sealed = sqlite3.connect(running.settings.db_path).execute("SELECT bmc_password_sealed FROM nodes").fetchone()[0]
    assert sealed and PASSWORD not in sealed
