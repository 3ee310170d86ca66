"""Inspection: one-time network boot, power on, and wait for the maintenance agent to
call home and report the hardware. Active steps run on a worker; passive steps advance
when the agent calls the API; every step has a deadline."""

from __future__ import annotations

import logging

from ..errors import InvalidTransition, PowerError
from ..models import BootDevice, Node, PowerAction
from ..states import ACTIVE_STEPS, Event, State, Step
from .engine import Conductor

LOG = logging.getLogger(__name__)


class InspectionFlow:
    def __init__(self, conductor: Conductor) -> None:
        self.c = conductor
        conductor.resumers.append(self.resume)

    def _deadline(self, step: Step) -> float:
        s = self.c.settings
        seconds = {
            Step.SET_BOOT_DEVICE: s.timeouts_power_on,
            Step.POWER_ON: s.timeouts_power_on,
            Step.WAIT_AGENT: s.timeouts_agent_boot,
            Step.WAIT_INSPECTION: s.timeouts_inspection,
        }[step]
        return self.c.clock() + seconds

    def start(self, node: Node) -> Node:
        """Move the node into inspecting and hand the active steps to a worker."""
        with self.c.node_lock(node, "starting inspection"):
            node = self.c.store.transition(node, Event.INSPECT, step=Step.SET_BOOT_DEVICE,
                                           deadline=self._deadline(Step.SET_BOOT_DEVICE),
                                           message="inspection requested")
            self.c.store.update_node(node.id, agent_token_hash=None)
        self.c.submit(node, "powering on for inspection", self._drive)
        return node

    def resume(self, node: Node) -> None:
        if node.state == State.INSPECTING and node.step in ACTIVE_STEPS:
            # Redo the power steps from the start: both are safe to repeat, and the
            # one-time boot device may have been spent by a boot we did not see.
            self.c.submit(node, "powering on for inspection", self._drive)

    def _drive(self, node: Node) -> None:
        if node.state != State.INSPECTING or node.step not in ACTIVE_STEPS:
            return
        bmc = self.c.bmc(node)
        try:
            if node.step != Step.SET_BOOT_DEVICE:
                node = self.c.store.set_step(node, Step.SET_BOOT_DEVICE,
                                             self._deadline(Step.SET_BOOT_DEVICE),
                                             expect_state=State.INSPECTING, message="retrying after restart")
            self.c.power.set_boot_device(bmc, BootDevice.NETWORK)
            node = self.c.store.set_step(node, Step.POWER_ON, self._deadline(Step.POWER_ON),
                                         expect_state=State.INSPECTING,
                                         message=f"one-time network boot set via IPMI {bmc.endpoint}")
            # Cycle rather than on: a machine that is already running must reboot into PXE.
            power = self.c.power.apply(bmc, PowerAction.CYCLE)
            self.c.store.update_node(node.id, power_state=power.value)
            self.c.store.set_step(node, Step.WAIT_AGENT, self._deadline(Step.WAIT_AGENT),
                                  expect_state=State.INSPECTING,
                                  message=f"powered on via IPMI {bmc.endpoint}")
        except PowerError as exc:
            LOG.error("node %s: inspection failed at %s: %s", node.name, node.step, exc)
            try:
                self.c.store.transition(node, Event.FAIL, error=f"{node.step}: {exc}")
            except InvalidTransition:
                pass
        except InvalidTransition as exc:
            LOG.info("node %s: inspection stopped: %s", node.name, exc)
