"""What a machine's last nights say: how often it failed, and which phase grew slower.
A night's record crosses the API once (parsed here into typed records); the judgement is
plain arithmetic on them, shared by the report and the dashboard."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput

SLOWER = 1.5  # tonight over this many times the phase's median of the nights before
RISING = 3  # ... or longer on each of this many nights in a row, by SLOW_RISE in all
SLOW_RISE = 1.2
MIN_SECONDS = 10.0  # a phase under this is noise, whatever its ratio


@dataclass(frozen=True)
class MachineNight:
    name: str
    rack: str
    passed: bool
    reason: str | None
    phases: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, doc: Any) -> "MachineNight":
        if not isinstance(doc, dict):
            raise InvalidInput("each machine must be an object")
        name, rack, reason = doc.get("name"), doc.get("rack", ""), doc.get("reason")
        if not isinstance(name, str) or not name or len(name) > 253 or not isinstance(rack, str) or len(rack) > 253:
            raise InvalidInput("a machine needs a name and a rack (strings)")
        if not isinstance(doc.get("passed"), bool):
            raise InvalidInput(f"machine {name}: passed must be true or false")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 4096):
            raise InvalidInput(f"machine {name}: reason must be text (at most 4096 characters)")
        phases = doc.get("phases", [])
        if not isinstance(phases, list) or len(phases) > 64 or not all(
                isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and len(p[0]) <= 64
                and isinstance(p[1], (int, float)) and not isinstance(p[1], bool) and 0 <= p[1] < 1e7 for p in phases):
            raise InvalidInput(f"machine {name}: phases must be [name, seconds] pairs")
        return cls(name, rack, doc["passed"], reason, tuple((str(p), float(s)) for p, s in phases))


@dataclass(frozen=True)
class Night:
    pool: str
    job: int | None
    started_at: float
    ended_at: float
    machines: tuple[MachineNight, ...]

    @classmethod
    def parse(cls, doc: dict[str, Any]) -> "Night":
        pool, job, machines = doc.get("pool"), doc.get("job"), doc.get("machines")
        if not isinstance(pool, str) or not pool or len(pool) > 253:
            raise InvalidInput("pool must be the pool's name")
        if job is not None and (not isinstance(job, int) or isinstance(job, bool)):
            raise InvalidInput("job must be a job id or null")
        times = []
        for key in ("started_at", "ended_at"):
            t = doc.get(key)
            if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 < t < 1e11:
                raise InvalidInput("started_at and ended_at must be times (seconds since the epoch)")
            times.append(float(t))
        if not isinstance(machines, list) or not 0 < len(machines) <= 100_000:
            raise InvalidInput("machines must be a list of the night's machines")
        parsed = tuple(MachineNight.parse(m) for m in machines)
        if len({m.name for m in parsed}) != len(parsed):
            raise InvalidInput("a machine is listed twice")
        return cls(pool, job, times[0], times[1], parsed)


def judge(nights: list[dict[str, Any]]) -> list[str]:
    """What stands out in a machine's nights (newest first): repeated failures, and each
    phase tonight much slower than before or longer night after night."""
    if not nights:
        return []
    said = []
    failed = sum(1 for n in nights if not n["passed"])
    if failed >= 2:
        said.append(f"failed {failed} of its last {len(nights)} nights")
    tonight = dict(nights[0]["phases"])
    for phase, seconds in tonight.items():
        before = [dict(n["phases"])[phase] for n in nights[1:] if phase in dict(n["phases"])]
        if seconds < MIN_SECONDS or not before:
            continue
        if len(before) >= 2 and seconds >= SLOWER * statistics.median(before):
            said.append(f"{phase} took {seconds:.0f}s, {seconds / statistics.median(before):.1f}x its median "
                        f"of {statistics.median(before):.0f}s")
            continue
        run = [seconds] + before[:RISING]
        if len(run) > RISING and all(a > b for a, b in zip(run, run[1:])) and run[0] >= SLOW_RISE * run[-1]:
            said.append(f"{phase} grew slower {RISING} nights in a row: "
                        + " -> ".join(f"{s:.0f}s" for s in reversed(run)))
    return said
