"""Deploy: boot the node into the maintenance image, have its agent lay the base image
and a fresh differencing layer down, switch the node to boot from its disk over IPMI,
and wait for the host agent. Rollback is the same deploy with a base the disk already
holds and `no_transfer`: the agent refuses to download anything."""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from typing import Any

from ..agent.protocol import CommandKind, CommandStatus, DeployArgs, DeployResult
from ..errors import InvalidTransition, PowerError
from ..hardware import HostFacts
from ..images import Catalog, Image
from ..models import BootDevice, Node, PowerAction
from ..secrets import Secret, hash_token
from ..sshkeys import new_keypair, operator_key
from ..states import ACTIVE_STEPS, Event, State, Step
from .engine import Conductor
from .multicast import MulticastService

LOG = logging.getLogger(__name__)


def transfer_text(result: DeployResult) -> str:
    """How the image arrived, as the agent reported it: "multicast 209715200 + HTTP 0 bytes"."""
    mc, http = result.get("multicast_bytes", 0), result.get("http_bytes", result.get("transferred_bytes", 0))
    if mc:
        return f"multicast {mc} + HTTP {http} bytes"
    return f"downloaded, {http} bytes over HTTP"


class DeployFlow:
    def __init__(self, conductor: Conductor, catalog: Catalog, multicast: MulticastService | None = None) -> None:
        self.conductor = conductor
        self.catalog = catalog
        self.multicast = multicast
        conductor.resumers.append(self.resume)

    def _deadline(self, step: Step) -> float:
        s = self.conductor.settings
        seconds: float = {
            Step.SET_BOOT_DEVICE: s.timeouts_power_on,
            Step.POWER_ON: s.timeouts_power_on,
            Step.WAIT_AGENT: s.timeouts_agent_boot,
            Step.WRITE_IMAGE: s.timeouts_deploy_stall,
            Step.BOOT_DISK: s.timeouts_power_on,
            Step.WAIT_HOST: s.timeouts_host_boot,
        }[step]
        return self.conductor.clock() + seconds

    # -- operator side --------------------------------------------------------
    def start(self, node: Node, image: Image, *, job: int | None = None, no_transfer: bool = False,
              why: str = "deploy") -> Node:
        with self.conductor.node_lock(node, f"starting {why}", job=job):
            # One transaction: a controller killed here leaves the node deployable or
            # deploying with what to deploy, never deploying without it.
            node = self.conductor.store.transition(
                node, Event.DEPLOY, step=Step.SET_BOOT_DEVICE, deadline=self._deadline(Step.SET_BOOT_DEVICE),
                message=f"{why}: {image.ref} (sha256 {image.sha256[:16]})",
                values={"agent_token_hash": None, "deploy_sha256": image.sha256, "deploy_no_transfer": int(no_transfer)})
            self.conductor.store.forget_host_images(node.name)  # its guest pool goes with its layer
        self.conductor.submit(node, f"powering on for {why}", self._power_steps, job=job)
        return node

    def resume(self, node: Node) -> None:
        if node.state == State.DEPLOYING and node.step in ACTIVE_STEPS:
            work = self._boot_disk if node.step == Step.BOOT_DISK else self._power_steps
            self.conductor.submit(node, "resuming deploy", work, job=node.job_id)

    def _fail(self, node: Node, reason: str) -> None:
        if self.conductor.store.node_by_id(node.id).state != State.DEPLOYING:
            return
        # A half-deployed machine must not boot from its disk: off first, so a node seen
        # in deploy-failed is already off.
        try:
            self.conductor.power.apply(self.conductor.bmc(node), PowerAction.OFF)
        except PowerError as exc:
            LOG.warning("node %s: could not power off after a failed deploy: %s", node.name, exc)
            reason += f" (and powering it off failed: {exc})"
        try:
            self.conductor.store.transition(node, Event.FAIL, error=reason)
        except InvalidTransition:
            pass

    def _power_steps(self, node: Node) -> None:
        self.conductor.boot_maintenance(node, State.DEPLOYING, self._deadline, self._fail)

    # -- agent side -----------------------------------------------------------
    def agent_ready(self, node: Node, address: str = "") -> None:
        """The maintenance agent authenticated: hand it the deploy command."""
        if node.state != State.DEPLOYING or node.deploy_sha256 is None:
            return
        if node.step == Step.WRITE_IMAGE and self.conductor.store.pending_commands(node):
            return  # the same boot asked twice; the command is already queued
        image = self.catalog.image_by_sha(node.deploy_sha256)
        host_token = secrets.token_urlsafe(32)
        host_key, host_key_pub = new_keypair(f"root@{node.name}")
        _, operator_pub = operator_key(self.conductor.settings.data_dir)
        keep = [s for s in (node.image_sha256, node.previous_image_sha256)
                if s and s != image.sha256][:1]
        args: DeployArgs = {
            "image": {"sha256": image.sha256, "format": image.format, "size": image.size,
                      "url": f"/v1/agent/images/{image.sha256}"},
            "keep": keep, "previous": keep[0] if keep else None,
            "no_transfer": node.deploy_no_transfer,
            # The address is the one this boot got; the agent adds it from its kernel arguments.
            "node": {"name": node.name, "mac": node.mac},
            # api None: the host agent calls the address the maintenance agent used.
            "host_agent": {"api": None, "token": host_token},
            "ssh": {"host_key": host_key, "host_key_pub": host_key_pub, "authorized_keys": [operator_pub]},
            "kernel_args": self.conductor.settings.boot_kernel_args,
        }
        offer, note = self.multicast.offer(node, address) if self.multicast and not node.deploy_no_transfer \
            else (None, None)
        if offer is not None:
            args["multicast"] = offer
        if note:
            self.conductor.store.record_event(node, "multicast", note)
        for old in self.conductor.store.pending_commands(node):
            self.conductor.store.set_command_status(old["id"], CommandStatus.SUPERSEDED)
        # A deploy the node's previous boot was running (it lost power, or was reset) never
        # ends: its last progress must not stand for this one's.
        self.conductor.store.supersede_running(node.id, CommandKind.DEPLOY)
        sealed = self.conductor.box.seal(Secret(json.dumps(args)))
        command = self.conductor.store.add_command(node, str(uuid.uuid4()), CommandKind.DEPLOY, sealed)
        self.conductor.store.update_node(node.id, host_token_hash=hash_token(host_token), host_key=host_key_pub)
        self.conductor.store.set_step(node, Step.WRITE_IMAGE, self._deadline(Step.WRITE_IMAGE),
                              expect_state=State.DEPLOYING,
                              message=f"deploy command {command['id']} queued: base {image.ref}")

    def progress(self, node: Node, result: dict[str, Any]) -> None:
        """The agent is still writing: push the stall deadline on."""
        if node.state == State.DEPLOYING and node.step == Step.WRITE_IMAGE:
            self.conductor.store.extend_deadline(node, self._deadline(Step.WRITE_IMAGE))

    def written(self, node: Node, ok: bool, result: DeployResult) -> None:
        if node.state != State.DEPLOYING or node.step != Step.WRITE_IMAGE:
            return
        if not ok:
            self._fail(node, f"write-image: {result.get('error', 'the agent reported a failure')}")
            return
        sha = node.deploy_sha256
        previous = node.previous_image_sha256
        if node.image_sha256 and node.image_sha256 != sha:
            previous = node.image_sha256
        self.conductor.store.update_node(node.id, image_sha256=sha, previous_image_sha256=previous)
        how = "already on disk, layer reset" if result.get("reused") else transfer_text(result)
        node = self.conductor.store.set_step(node, Step.BOOT_DISK, self._deadline(Step.BOOT_DISK),
                                     expect_state=State.DEPLOYING,
                                     message=f"image laid down on {result.get('disk')}: {how}, "
                                             + (f"; UEFI boot entry Boot{result['boot_entry']}"
                                                if "boot_entry" in result else ""))
        self.conductor.submit(node, "switching to boot from disk", self._boot_disk, job=node.job_id)

    def _boot_disk(self, node: Node) -> None:
        if node.state != State.DEPLOYING or node.step != Step.BOOT_DISK:
            return
        bmc = self.conductor.bmc(node)
        try:
            self.conductor.power.set_boot_device(bmc, BootDevice.DISK, node.boot_mode,
                                                 secure_boot=True if node.secure_boot else None)
            power = self.conductor.power.apply(bmc, PowerAction.CYCLE)
            self.conductor.store.update_node(node.id, power_state=power.value)
            self.conductor.store.set_step(node, Step.WAIT_HOST, self._deadline(Step.WAIT_HOST),
                                  expect_state=State.DEPLOYING,
                                  message=f"boot from disk set and power cycled via {bmc.driver.label} {bmc.endpoint}"
                                          + (", Secure Boot on" if node.secure_boot else ""))
        except PowerError as exc:
            self._fail(node, f"{node.step}: {exc}")
        except InvalidTransition as exc:
            LOG.info("node %s: deploy stopped: %s", node.name, exc)

    def host_reported(self, node: Node, facts: HostFacts) -> None:
        if node.state != State.DEPLOYING or node.step not in (Step.BOOT_DISK, Step.WAIT_HOST):
            return
        booted = facts.base_sha256
        if booted and booted != node.image_sha256:
            self._fail(node, f"wait-host: the host booted base {booted[:16]}, "
                             f"expected {str(node.image_sha256)[:16]}")
            return
        if node.secure_boot and facts.secure_boot is False:
            self._fail(node, "wait-host: the host booted with Secure Boot off; its firmware did not take it back on")
            return
        self.conductor.store.transition(node, Event.DONE, message=f"host agent reported: {facts.cpus} CPUs, "
                                f"{facts.memory_mib} MiB, kvm={'yes' if facts.kvm else 'no'}")
