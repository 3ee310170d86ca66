"""The nightly report: JUnit cases per machine and check, phases from a node's events."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from provisioner.nightly.report import Machine, write_report
from provisioner.nightly.run import phases
from provisioner.workflows.consoles import readable

PLAN = {"image": {"ref": "host:1", "sha256": "ab" * 32}, "batches": [["a"], ["b"]]}
CHECK = {"name": "cpus", "ok": True, "detail": "2 CPUs (inspection: 2)", "seconds": 0.1}


def test_junit_has_a_case_per_machine_and_check_and_fails_only_the_broken_one(tmp_path):
    good = Machine("a", rack="rack-1", reimage_seconds=40.0, checks=[CHECK, {**CHECK, "name": "disks"}])
    bad = Machine("b", rack="rack-1", reimage_error="BMC 10.0.0.9: wrong password", console="boot <&> log\n")
    files = write_report(tmp_path, "rack-1", PLAN, [good, bad], 0.0, 100.0, 7)
    suite = ET.parse(files["junit"]).getroot()
    cases = {(c.get("classname"), c.get("name")): c for c in suite.iter("testcase")}
    assert sorted(cases) == [("rack-1.a", "cpus"), ("rack-1.a", "disks"), ("rack-1.a", "reimage"),
                             ("rack-1.b", "reimage")]
    assert (suite.get("tests"), suite.get("failures")) == ("4", "1")
    failure = cases[("rack-1.b", "reimage")].find("failure")
    assert failure.get("message") == "BMC 10.0.0.9: wrong password"
    assert cases[("rack-1.b", "reimage")].findtext("system-out") == "boot <&> log\n"
    html = files["html"].read_text()
    assert "1 passed, 1 failed" in html and "boot &lt;&amp;&gt; log" in html  # escaped
    assert not good.failed and bad.failed and bad.reason() == "reimage: BMC 10.0.0.9: wrong password"


def test_a_failed_check_fails_the_machine_with_its_detail():
    m = Machine("a", checks=[CHECK, {**CHECK, "name": "memory", "ok": False, "detail": "1024 MiB (inspection: 2048 MiB)"}])
    assert m.failed and m.reason() == "memory: 1024 MiB (inspection: 2048 MiB)"


def test_phases_are_the_time_in_each_step_in_order():
    events = [{"ts": 10, "step": "power-on", "event": "e"}, {"ts": 12, "step": "wait-agent", "event": "e"},
              {"ts": 30, "step": "wait-agent", "event": "e"}, {"ts": 35, "step": None, "to_state": "active",
                                                                "event": "e"}, {"ts": 99, "step": "x", "event": "e"}]
    assert phases(events, 10, 40) == [("power-on", 2), ("wait-agent", 23), ("active", 5)]


def test_console_text_loses_terminal_controls_only():
    assert readable(b"\x1b[2J\x1b[1;1HSeaBIOS\r\nline\ttwo\n\x07") == "SeaBIOS\nline\ttwo\n"
