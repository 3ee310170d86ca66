"""`provisioner nightly rack-1` in the lab: the rack is reimaged by upgrade domain, every
host that came back is checked (built-in checks over SSH, then playbooks/checks.yml through
ansible-playbook), and a JUnit file and an HTML report tell each machine's story. One
machine's BMC password is broken on purpose: only its test case fails, with the reason,
and the exit code says so."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import enroll_missing, import_missing

REPO = Path(__file__).resolve().parents[2]
HOST_IMAGE = REPO / "build/images/host/host.qcow2"
CHECKS = ["cpus", "memory", "disks", "hypervisor", "network"]
GOOD, BROKEN, OTHER_RACK = "lab-r1-n1", "lab-r1-n2", "lab-r2-n1"


@pytest.fixture
def nightly_lab(shared_lab):
    """The shared lab with its three nodes enrolled (rack-1 comes from test_reimage,
    reimaged and rolled back many times; rack-2 stays ready) and the host image."""
    enroll_missing(shared_lab, [GOOD, BROKEN, OTHER_RACK])
    import_missing(shared_lab, HOST_IMAGE, "host")
    return shared_lab


def cases(junit: Path) -> dict[tuple[str, str], ET.Element]:
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite"
    found = {(c.get("classname").split(".", 1)[1], c.get("name")): c for c in suite.iter("testcase")}
    assert int(suite.get("tests")) == len(found)
    assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in found.values())
    return found


def test_nightly_fails_only_the_machine_whose_bmc_is_broken(nightly_lab, tmp_path):
    lab = nightly_lab
    bmcs = lab.lab.bmcs
    port = int(lab.inventory[BROKEN]["bmc"]["address"].rsplit(":", 1)[1])
    bmcs.remove(BROKEN)
    bmcs.add(BROKEN, port, lab.lab.cfg.bmc_user, "not-the-recorded-password")
    try:
        code, out, err = lab.cli("nightly", "rack-1", "--image", "host", "--report", str(tmp_path))
    finally:
        bmcs.remove(BROKEN)
        bmcs.add(BROKEN, port, lab.lab.cfg.bmc_user,
                 Path(lab.inventory[BROKEN]["bmc"]["password_file"]).read_text().strip())
    assert code == 1, out + err
    assert "1 passed, 1 failed" in out
    found = cases(tmp_path / "junit.xml")
    assert sorted(found) == sorted([(GOOD, "reimage"), *((GOOD, c) for c in CHECKS), (BROKEN, "reimage")])
    for check in ["reimage", *CHECKS]:
        assert found[(GOOD, check)].find("failure") is None, ET.tostring(found[(GOOD, check)]).decode()
    failure = found[(BROKEN, "reimage")].find("failure")
    assert failure is not None
    assert "password" in failure.get("message").lower() or "auth" in failure.get("message").lower(), \
        failure.get("message")
    # The good machine really was reimaged, and the other rack left alone.
    assert lab.client.get(f"/v1/nodes/{GOOD}")["state"] == "active"
    assert lab.client.get(f"/v1/nodes/{OTHER_RACK}")["state"] == "ready"
    html = (tmp_path / "report.html").read_text()
    assert "1 passed, 1 failed" in html and f'id="{GOOD}"' in html and f'id="{BROKEN}"' in html
    # The failed machine's console tail is in the report; the lab logs every node's console.
    console = lab.lab.console_log(BROKEN).read_text()
    assert console.strip() and "the end of its serial console" in html
    code, out, err = lab.cli("console", BROKEN)
    assert code == 0 and out.strip() and out.strip().splitlines()[-1] in console


def test_nightly_with_the_checks_playbook_passes_when_all_is_well(nightly_lab, tmp_path):
    lab = nightly_lab
    code, out, err = lab.cli("nightly", "rack-1", "--image", "host", "--checks",
                             str(REPO / "playbooks/checks.yml"), "--report", str(tmp_path))
    assert code == 0, out + err
    found = cases(tmp_path / "junit.xml")
    for name in (GOOD, BROKEN):
        for check in ["reimage", *CHECKS]:
            case = found[(name, check)]
            assert case.find("failure") is None, ET.tostring(case).decode()
    # The playbook's own words reach the report: what each host showed.
    assert "2 CPUs (inspection: 2)" in found[(GOOD, "cpus")].findtext("system-out")
    assert f"ping {lab.lab.cfg.address}" in found[(BROKEN, "network")].findtext("system-out")
    # The report remembers: the machine whose BMC failed last night shows that night too.
    history = lab.client.get(f"/v1/nights/machines?nodes={GOOD},{BROKEN}")["machines"]
    assert [n["passed"] for n in history[BROKEN]["nights"][:2]] == [True, False], history[BROKEN]
    assert history[BROKEN]["nights"][1]["reason"].startswith("reimage: ")
    assert [n["passed"] for n in history[GOOD]["nights"][:2]] == [True, True]
    html = (tmp_path / "report.html").read_text()
    assert html.count('title="reimage: ') == 1 and "<th>night</th>" in html


def test_the_checks_api_checks_active_hosts_and_says_why_it_cannot_check_others(nightly_lab):
    lab = nightly_lab
    node = lab.client.get(f"/v1/nodes/{GOOD}")
    doc = lab.client.post("/v1/checks", {"nodes": [GOOD, OTHER_RACK]})["results"]
    assert [c["name"] for c in doc[GOOD]] == CHECKS and all(c["ok"] for c in doc[GOOD]), doc
    assert doc[OTHER_RACK] == [{"name": "reachable", "ok": False, "seconds": 0.0,
                                "detail": f"{OTHER_RACK} is ready, not active: not deployed"}]
    assert node["state"] == "active"
