"""Rendering for people: tables, node summaries, and progress lines while waiting."""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any, Iterable, Sequence, TextIO

from .live import Row, fraction
from ..models import BmcDriver


def print_json(doc: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    out.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    line = "  ".join("{:<%d}" % w for w in widths)
    out.write(line.format(*[h.upper() for h in headers]).rstrip() + "\n")
    for row in cells:
        out.write(line.format(*row).rstrip() + "\n")


def size_text(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)


def progress_text(progress: dict[str, Any] | None) -> str:
    """'writing 40% of 1.0 GiB' from what the agent last reported."""
    if not progress:
        return ""
    phase = str(progress.get("phase", ""))
    if progress.get("path") in ("multicast", "http"):
        phase = "waiting for the multicast session" if phase == "waiting" else \
            f"{phase} ({'multicast' if progress['path'] == 'multicast' else 'HTTP'})"
    done, total = progress.get("bytes"), progress.get("total")
    if isinstance(done, int) and isinstance(total, int) and total > 0:
        return f"{phase} {100 * done // total}% of {size_text(total)}"
    return phase


def _gib(n: int | None) -> str:
    return f"{n / (1 << 30):.0f} GiB" if n else ""


def node_rows(nodes: Iterable[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    headers = ["name", "mac", "rack", "state", "power", "cpus", "memory", "disk", "image", "agent"]
    rows = []
    for n in nodes:
        hw = n.get("hardware") or {}
        state = n["state"] + (f" ({n['step']})" if n.get("step") else "")
        mem = hw.get("memory_mib")
        rows.append([n["name"], n["mac"], n["rack"], state, n.get("power_state"), hw.get("cpus"),
                     f"{mem} MiB" if mem else "", _gib(hw.get("disk_bytes")), n.get("image") or "",
                     n.get("agent")])
    return headers, rows


def tally(members: Iterable[dict[str, Any]]) -> str:
    """'2 done, 1 failed': a job's nodes or guests counted by status."""
    counts: dict[str, int] = {}
    for m in members:
        counts[m["status"]] = counts.get(m["status"], 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))


def timestamp(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def node_detail(n: dict[str, Any], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    bmc = n["bmc"]
    pairs = [
        ("name", n["name"]), ("id", n["id"]), ("mac", n["mac"]),
        ("rack", n["rack"] + (f" (controller {n['controller']})" if n.get("controller") else "")),
        ("tags", ", ".join(n.get("tags") or [])),
        ("upgrade domain", n.get("upgrade_domain")),
        ("state", n["state"]), ("step", n.get("step")), ("target", n.get("target_state")),
        ("deadline", timestamp(n.get("deadline"))),
        ("why" if n["state"] == "out-for-repair" else "last error", n.get("last_error")),
        ("health", f"{timestamp(n['health']['at'])} {n['health']['what']}: {n['health']['message']}"
         if n.get("health") else None),
        ("power", n.get("power_state")),
        ("bmc", _bmc_line(bmc)),
        ("agent", f"{n.get('agent')} (last seen {timestamp(n.get('agent_last_seen')) or 'never'})"),
        ("boots", n.get("boot_count")),
        ("image", f"{n['image']} (sha256 {n['image_sha256'][:16]})" if n.get("image") else None),
        ("progress", progress_text(n.get("progress"))),
    ]
    for key, value in pairs:
        if value not in (None, ""):
            out.write(f"{key:<11} {value}\n")
    inv = n.get("inspection")
    if inv:
        cpu, mem, dmi = inv.get("cpu", {}), inv.get("memory", {}), inv.get("dmi", {})
        out.write(f"{'hardware':<11} {cpu.get('count')} x {cpu.get('model', '?')}; "
                  f"{mem.get('total_mib')} MiB; firmware {inv.get('firmware')}"
                  f"{', Secure Boot' if n.get('secure_boot') else ''}\n")
        out.write(f"{'system':<11} {dmi.get('sys_vendor', '')} {dmi.get('product_name', '')} "
                  f"serial {dmi.get('product_serial', '')}\n")
        for d in inv.get("disks", []):
            out.write(f"{'disk':<11} {d.get('name')} {_gib(d.get('size_bytes'))} "
                      f"model {d.get('model') or '-'} serial {d.get('serial') or '-'}\n")
        for nic in inv.get("nics", []):
            out.write(f"{'nic':<11} {nic.get('name')} {nic.get('mac')} "
                      f"link {'up' if nic.get('carrier') else 'down'} {nic.get('speed_mbps') or ''}\n")


def node_row(n: dict[str, Any]) -> Row:
    """A node in a live view: its state and step (with the write's progress)."""
    detail = f" ({n['step']})" if n.get("step") else ""
    error = f": {n['last_error']}" if n.get("last_error") else ""
    progress = progress_text(n.get("progress"))
    return Row(n["name"], (n["name"], n["rack"], n["state"], (n.get("step") or "") + (f" {progress}" if progress else "")),
               f"{n['name']:<16} {n['state']}{detail}{error}", fraction(n.get("progress")))


def _bmc_line(bmc: dict[str, Any]) -> str:
    if bmc.get("driver") == BmcDriver.REDFISH:
        return (f"Redfish https://{bmc['address']}:{bmc['port']}{bmc.get('system') or ''} "
                f"user {bmc['username']}")
    return f"IPMI {bmc['address']}:{bmc['port']} user {bmc['username']} (cipher suite {bmc['cipher_suite']})"
