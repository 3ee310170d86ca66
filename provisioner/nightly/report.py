"""The nightly run's report: one JUnit XML file (a test case per machine and check, which
CI dashboards read) and one HTML page (per machine: phase timings, inspection, checks, and
the tail of its console log when it failed)."""

from __future__ import annotations

import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Machine:
    name: str
    rack: str = ""
    image: str | None = None
    reimage_error: str | None = None
    reimage_seconds: float | None = None
    phases: list[tuple[str, float]] = field(default_factory=list)
    inspection: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    console: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)  # its last nights, newest (this one) first
    flags: list[str] = field(default_factory=list)  # what stands out in them

    @property
    def failed(self) -> bool:
        return self.reimage_error is not None or not all(c["ok"] for c in self.checks)

    def reason(self) -> str:
        if self.reimage_error is not None:
            return f"reimage: {self.reimage_error}"
        bad = [c for c in self.checks if not c["ok"]]
        return "; ".join(f"{c['name']}: {c['detail']}" for c in bad)

    def doc(self) -> dict[str, Any]:
        return {"name": self.name, "rack": self.rack, "image": self.image, "failed": self.failed,
                "reason": self.reason() if self.failed else None, "reimage_error": self.reimage_error,
                "reimage_seconds": self.reimage_seconds, "phases": [list(p) for p in self.phases],
                "inspection": self.inspection, "checks": self.checks, "last_nights": self.history,
                "flags": self.flags}


def junit(pool: str, machines: list[Machine], started: float, ended: float) -> ET.Element:
    """A case per machine for its reimage, and one per check it ran. A machine that did not
    come back has its checks left out (there was nothing to check), its reimage failed."""
    suite = ET.Element("testsuite", name=f"nightly {pool}", hostname=socket.gethostname(),
                       timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)),
                       time=f"{ended - started:.1f}")
    counts = {"tests": 0, "failures": 0}
    for m in machines:
        cases = [("reimage", m.reimage_error is None, m.reimage_error or "", m.reimage_seconds or 0.0)]
        cases += [(c["name"], bool(c["ok"]), str(c["detail"]), float(c.get("seconds") or 0.0)) for c in m.checks]
        for name, ok, detail, seconds in cases:
            case = ET.SubElement(suite, "testcase", classname=f"{pool}.{m.name}", name=name, time=f"{seconds:.1f}")
            counts["tests"] += 1
            if not ok:
                counts["failures"] += 1
                failure = ET.SubElement(case, "failure", message=detail.splitlines()[0][:300] if detail else "failed")
                failure.text = detail
                if m.console:
                    ET.SubElement(case, "system-out").text = m.console
            elif detail:
                ET.SubElement(case, "system-out").text = detail
    suite.set("tests", str(counts["tests"]))
    suite.set("failures", str(counts["failures"]))
    suite.set("errors", "0")
    suite.set("skipped", "0")
    return suite


def write_report(directory: Path, pool: str, plan: dict[str, Any], machines: list[Machine], started: float,
                 ended: float, job_id: int | None) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {"junit": directory / "junit.xml", "html": directory / "report.html"}
    tree = ET.ElementTree(junit(pool, machines, started, ended))
    ET.indent(tree)
    tmp = files["junit"].with_suffix(".xml.tmp")
    tree.write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(files["junit"])
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.globals["dict"] = dict
    for m in machines:
        for n in m.history:
            n.setdefault("started", time.strftime("%Y-%m-%d %H:%M", time.gmtime(n["started_at"])))
    html = env.get_template("report.html.j2").render(
        pool=pool, plan=plan, machines=machines, job_id=job_id,
        started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)), took=f"{ended - started:.0f}",
        passed=sum(not m.failed for m in machines), failed=sum(m.failed for m in machines))
    tmp = files["html"].with_suffix(".html.tmp")
    tmp.write_text(html)
    tmp.replace(files["html"])
    return files
