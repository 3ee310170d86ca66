"""Inspection: one-time network boot, power on, and wait for the maintenance agent to
call home and report the hardware. Active steps run on a worker; passive steps advance
when the agent calls the API; every step has a deadline."""

from __future__ import annotations

import logging

from ..errors import InvalidTransition
from ..models import Node
from ..states import ACTIVE_STEPS, Event, State, Step
from .engine import Conductor

LOG = logging.getLogger(__name__)


class InspectionFlow:
    def __init__(self, conductor: Conductor) -> None:
        self.conductor = conductor
        conductor.resumers.append(self.resume)

    def _deadline(self, step: Step) -> float:
        s = self.conductor.settings
        seconds = {
            Step.SET_BOOT_DEVICE: s.timeouts_power_on,
            Step.POWER_ON: s.timeouts_power_on,
            Step.WAIT_AGENT: s.timeouts_agent_boot,
            Step.WAIT_INSPECTION: s.timeouts_inspection,
        }[step]
        return self.conductor.clock() + seconds

    def start(self, node: Node) -> Node:
        """Move the node into inspecting and hand the active steps to a worker."""
        with self.conductor.node_lock(node, "starting inspection"):
            node = self.conductor.store.transition(node, Event.INSPECT, step=Step.SET_BOOT_DEVICE,
                                                   deadline=self._deadline(Step.SET_BOOT_DEVICE),
                                                   message="inspection requested", values={"agent_token_hash": None})
        self.conductor.submit(node, "powering on for inspection", self._drive)
        return node

    def resume(self, node: Node) -> None:
        if node.state == State.INSPECTING and node.step in ACTIVE_STEPS:
            self.conductor.submit(node, "powering on for inspection", self._drive)

    def _drive(self, node: Node) -> None:
        self.conductor.boot_maintenance(node, State.INSPECTING, self._deadline, self._fail)

    def _fail(self, node: Node, reason: str) -> None:
        try:
            self.conductor.store.transition(node, Event.FAIL, error=reason)
        except InvalidTransition:
            pass
