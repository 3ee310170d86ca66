"""How close the lab's daemon came to its deadlines: each in-progress step a node went
through (from its events, against the setting that bounds the step) and each guest's
readiness (against guests.ready_timeout). The lab's deadlines must stay at least three
times what they measure (docs/design.md); `provisioner lab margins` and the lab tier print
the largest shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .. import config
from ..client import Client
from ..errors import ProvisionerError
from ..states import Step

# Each step's deadline, by the setting it comes from (workflows/inspect.py and deploy.py).
# write-image's is a stall deadline (silence from the agent), not the step's whole length.
STEP_SETTINGS = {Step.SET_BOOT_DEVICE: "timeouts_power_on", Step.POWER_ON: "timeouts_power_on",
                 Step.WAIT_AGENT: "timeouts_agent_boot", Step.WAIT_INSPECTION: "timeouts_inspection",
                 Step.BOOT_DISK: "timeouts_power_on", Step.WAIT_HOST: "timeouts_host_boot"}


@dataclass(frozen=True, order=True)
class Margin:
    share: float  # of the deadline, 0..1 (more: it was missed)
    what: str
    seconds: float
    deadline: float

    def __str__(self) -> str:
        return f"{self.share:4.0%}  {self.what}: {self.seconds:.0f}s of {self.deadline:.0f}s"


def step_spans(events: Iterable[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(step, began, ended) for each step in a node's events: a step starts with its event
    and ends with the next event of another step or of a change of state (a note on the
    way, which names no step or the same one, does not end it)."""
    spans: list[tuple[str, float, float]] = []
    current: tuple[str, float] | None = None
    for event in events:
        step = event.get("step")
        moved = event.get("from_state") != event.get("to_state")
        if current is not None and (moved or (step is not None and step != current[0])):
            spans.append((current[0], current[1], float(event["ts"])))
            current = None
        if step and current is None:
            current = (str(step), float(event["ts"]))
    return spans


def margins(client: Client, settings: config.Settings, since: float = 0.0,
            until: float = float("inf")) -> list[Margin]:
    """Every deadline-bound wait the daemon ran between `since` and `until`, largest first."""
    found: list[Margin] = []
    for node in client.get("/v1/nodes")["nodes"]:
        for step, began, ended in step_spans(client.get(f"/v1/nodes/{node['name']}/events")["events"]):
            if step in STEP_SETTINGS and ended >= since and began <= until:
                limit = float(getattr(settings, STEP_SETTINGS[Step(step)]))
                found.append(Margin((ended - began) / limit, f"{node['name']} {step}", ended - began, limit))
    for guest in client.get("/v1/guests").get("guests", []):
        ready = guest.get("ready_seconds")
        if ready:
            limit = settings.guests_ready_timeout
            found.append(Margin(float(ready) / limit, f"guest {guest['name']} ready", float(ready), limit))
    return sorted(found, reverse=True)


def lab_margins(lab: Any, since: float = 0.0, until: float = float("inf")) -> list[Margin]:
    """The margins of a lab that is up (`lab` a provisioner.lab.lab.Lab); none if its
    daemon does not answer."""
    state = lab.load()
    if state is None:
        return []
    try:
        settings = config.load(lab.dir / "provisioner.toml", overrides=state.settings, environ={})
        return margins(lab.client(), settings, since, until)
    except (ProvisionerError, OSError, KeyError, ValueError):
        return []
