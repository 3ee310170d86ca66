"""schemathesis against the daemon's own OpenAPI document: every operation, a bounded
number of examples each, with path parameters pointed at nodes, images, jobs and
commands that exist and a real agent token, so the examples reach real handlers rather
than 404s. Not one answer may be a server error, and the daemon's log must hold no
traceback. The document itself must validate as OpenAPI 3."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate

from .conftest import DaemonProcess, run_agent

MACS = {"fz-1": "52:54:00:f0:00:01", "fz-2": "52:54:00:f0:00:02"}


def wait_state(proc: DaemonProcess, name: str, states: set[str], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while proc.client.get(f"/v1/nodes/{name}")["state"] not in states:
        assert time.monotonic() < end, proc.client.get(f"/v1/nodes/{name}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def fuzzed():
    """The daemon with a ready node (inspected by the real agent), a node waiting for its
    agent (whose token the fuzzer carries), an image, and a reimage job that ran."""
    work = Path(tempfile.mkdtemp(prefix="pv-", dir="/tmp"))
    proc = DaemonProcess(work, "timeouts.agent_boot=3600", "timeouts.inspection=3600")
    proc.start()
    try:
        c = proc.client
        url = f"http://127.0.0.1:{proc.http_port}"
        for name, mac in MACS.items():
            c.post("/v1/nodes", {"mac": mac, "rack": "rack-1", "name": name,
                                 "bmc": {"address": "10.0.0.9", "username": "admin", "password": "fuzz-pass"}})
            wait_state(proc, name, {"inspecting"})
        assert run_agent(url, MACS["fz-1"], work / "agent").returncode == 0
        wait_state(proc, "fz-1", {"ready"})
        image = work / "base.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
        c.upload("/v1/images?name=base&filename=base.qcow2", image, lambda sent, size: None)
        job = c.post("/v1/reimage", {"target": "fz-1", "image": "base"})
        request = urllib.request.Request(f"{url}/v1/agent/lookup", method="POST",
                                         data=json.dumps({"mac": MACS["fz-2"]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            token = json.load(resp)["token"]
        known = {"node": ["fz-1", "fz-2", MACS["fz-1"], "1", "nope"], "ref": ["base", "base:1", "nope:3"],
                 "job": [str(job.get("job", {}).get("id", 1)) if isinstance(job.get("job"), dict) else "1", "999"],
                 "sha256": [c.get("/v1/images")["images"][0]["sha256"], "0" * 64],
                 "artifact": ["vmlinuz", "initrd.img", "nope"],
                 "script": [f"{MACS['fz-2'].replace(':', '-')}.ipxe", "boot.ipxe"],
                 "command": ["1", "2"], "guest": ["web-1"], "host": ["fz-1", "nope"]}
        yield proc, token, known
    finally:
        proc.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def api_schema(fuzzed):
    proc, _, known = fuzzed
    doc = proc.client.get("/v1/openapi.json")
    validate(doc)  # openapi-spec-validator: a valid OpenAPI 3 document
    for path, operations in list(doc["paths"].items()):
        # Deletes would take the fixtures away from every later example; test_bad_input and
        # test_jobs cover them.
        operations.pop("delete", None)
        if not operations:
            del doc["paths"][path]
        for op in operations.values():
            for param in op.get("parameters", []):
                if param["in"] == "path" and param["name"] in known:
                    param["schema"] = {"type": "string", "enum": known[param["name"]]}
    # A host to register is connected to over SSH: only this machine, where no sshd
    # answers, so each example fails fast instead of waiting on DNS or a far address.
    hosts = doc["paths"]["/v1/hosts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    hosts["properties"]["address"] = {"type": "string", "enum": ["127.0.0.1"]}
    return schemathesis.openapi.from_dict(doc)


def test_no_request_the_document_allows_gets_a_server_error(api_schema, fuzzed):
    proc, token, _ = fuzzed
    operator = (proc.workdir / "data" / "operator.token").read_text().strip()
    headers = {"Authorization": f"Bearer {operator}", "X-Agent-Token": token}
    base = f"http://127.0.0.1:{proc.http_port}"
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 30

    for operation in operations:
        @given(operation.as_strategy())
        @settings(max_examples=40, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def examples(case):
            response = case.call(base_url=base, headers=headers, timeout=30)
            assert response.status_code < 500, \
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"

        try:
            examples()
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0])
    access = (proc.workdir / "data" / "logs" / "http-access.log").read_text().splitlines()
    statuses = [line.split()[4] for line in access]
    # The examples reached real handlers: a good share were answered with success.
    assert len(access) > 500 and sum(s.startswith("2") for s in statuses) > len(statuses) // 5, statuses
    assert failures == []


def test_the_fuzzed_daemon_logged_no_traceback(fuzzed):
    proc, _, _ = fuzzed
    assert proc.proc is not None and proc.proc.poll() is None, "the daemon died"
    log = (proc.workdir / "daemon.log").read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 200:][:3000]
