"""Which iPXE script a node gets when it network-boots: the maintenance image when an
operation expects it, its own disk otherwise (no endless PXE loops)."""

from __future__ import annotations

import logging
from typing import Callable

from ..errors import NotFound
from ..models import normalize_mac
from ..states import State, Step
from .engine import Conductor

LOG = logging.getLogger(__name__)


class NetbootService:
    def __init__(self, conductor: Conductor, render: Callable[..., str]) -> None:
        self.conductor = conductor
        self._render = render

    def script(self, mac_text: str, base_url: str) -> str:
        mac = normalize_mac(mac_text)
        node = self.conductor.store.find_node_by_mac(mac)
        if node is None:
            raise NotFound(f"MAC {mac} is not enrolled")
        deploying = node.state == State.DEPLOYING and node.step in (
            Step.SET_BOOT_DEVICE, Step.POWER_ON, Step.WAIT_AGENT, Step.WRITE_IMAGE)
        if node.state in (State.INSPECTING, State.READY) or deploying:
            boot_id = node.boot_count + 1
            # A new boot into the maintenance image: the old token dies with the old boot.
            self.conductor.store.update_node(node.id, agent_token_hash=None, boot_count=boot_id)
            if node.state == State.INSPECTING and node.step == Step.WAIT_INSPECTION:
                self.conductor.store.set_step(node, Step.WAIT_AGENT,
                                      self.conductor.clock() + self.conductor.settings.timeouts_agent_boot,
                                      expect_state=State.INSPECTING, message="node rebooted")
            self.conductor.store.record_event(node, "netboot", f"network boot {boot_id}: maintenance image")
            return self._render("maintenance.ipxe.j2", node=node, boot_id=boot_id,
                                    base_url=base_url,
                                    kernel_args=self.conductor.settings.boot_kernel_args)
        self.conductor.store.record_event(node, "netboot", "network boot: sent to its own disk")
        return self._render("localboot.ipxe.j2", node=node)
