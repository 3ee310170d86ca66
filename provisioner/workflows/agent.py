"""What the agent may do: look itself up by MAC and receive its per-boot token, report
inspection data, heartbeat for commands, and report command results. Tokens are issued
once per boot, stored only as a SHA-256 hash, and required on every later call."""

from __future__ import annotations

import logging
import secrets
import json
import uuid
from typing import Any, Protocol

from ..agent.protocol import REPORTED, CommandKind, CommandStatus, DeployResult, deploy_result
from ..errors import Conflict, InvalidInput, NotFound, Unauthorized
from ..hardware import Hardware, HostFacts
from ..models import Node, normalize_mac
from ..secrets import hash_token
from ..states import Event, State, Step
from ..store import Store
from .engine import Conductor
from .heartbeats import Heartbeats

LOG = logging.getLogger(__name__)

COMMANDS = (CommandKind.POWEROFF, CommandKind.REBOOT)  # what an operator may queue


# Deploying nodes boot the maintenance agent at these steps (a reboot mid-write repeats it).
_DEPLOY_AGENT_STEPS = (Step.SET_BOOT_DEVICE, Step.POWER_ON, Step.WAIT_AGENT, Step.WRITE_IMAGE)


class DeployListener(Protocol):
    """What the deploy flow is told by the agents (it registers itself here, so this module
    does not import it)."""

    def agent_ready(self, node: Node, address: str) -> None: ...
    def progress(self, node: Node, result: dict[str, Any]) -> None: ...
    def written(self, node: Node, ok: bool, result: DeployResult) -> None: ...
    def host_reported(self, node: Node, facts: HostFacts) -> None: ...


class AgentService:
    def __init__(self, conductor: Conductor, deploy: DeployListener | None = None,
                 heartbeats: Heartbeats | None = None) -> None:
        self.conductor = conductor
        self.deploy = deploy
        self.heartbeats = heartbeats

    @property
    def store(self) -> Store:
        return self.conductor.store

    def lookup(self, body: dict[str, Any], address: str = "") -> dict[str, Any]:
        mac = normalize_mac(str(body.get("mac", "")))
        node = self.store.find_node_by_mac(mac)
        if node is None:
            raise NotFound(f"MAC {mac} is not enrolled")
        deploying = node.state == State.DEPLOYING and node.step in _DEPLOY_AGENT_STEPS
        if node.state not in (State.INSPECTING, State.READY) and not deploying:
            raise Conflict(f"node {node.name} is {node.state} and expects no maintenance agent")
        token = secrets.token_urlsafe(32)
        if not self.store.issue_token(node.id, hash_token(token)):
            raise Conflict(f"node {node.name}: a token was already issued for this boot; "
                           "boot the node into the maintenance image again to get a new one")
        try:
            self._welcome(node, body, deploying, address)
        except BaseException:
            # The agent never learns this token: take it back, so its retry can look up again.
            self.store.withdraw_token(node.id, hash_token(token))
            raise
        LOG.info("node %s: agent looked up by %s, token issued", node.name, mac)
        return {"node": {"id": node.id, "name": node.name}, "token": token,
                "heartbeat_interval": self.conductor.settings.agent_heartbeat_interval}

    def _welcome(self, node: Node, body: dict[str, Any], deploying: bool, address: str) -> None:
        """What a lookup does once the token is issued; what can fail goes first."""
        if deploying and self.deploy is not None:
            self.deploy.agent_ready(self.store.node_by_id(node.id), address)
        if node.state == State.INSPECTING and node.step != Step.WAIT_INSPECTION:
            deadline = self.conductor.clock() + self.conductor.settings.timeouts_inspection
            self.store.set_step(node, Step.WAIT_INSPECTION, deadline, expect_state=State.INSPECTING,
                                message="agent authenticated")
        self.store.update_node(node.id, agent_last_seen=self.conductor.clock())
        self.store.record_event(node, "agent", f"agent called home (boot {body.get('boot', '?')}) "
                                f"and received its token")

    def authenticate(self, token: str | None) -> Node:
        if not token:
            raise Unauthorized("agent call without a token: look up first (POST /v1/agent/lookup)")
        # Looked up by hash: the token itself is never stored or compared.
        node = self.store.node_by_token_hash(hash_token(token))
        if node is None:
            raise Unauthorized("invalid agent token")
        return node

    def report_inspection(self, node: Node, body: dict[str, Any]) -> dict[str, Any]:
        inventory = body.get("inventory")
        hardware = Hardware.parse(inventory)
        self.store.update_node(node.id, inspection=inventory, agent_last_seen=self.conductor.clock())
        if node.state == State.INSPECTING:
            node = self.store.transition(node, Event.DONE, message=f"inspected: {hardware.summary()}")
        return {"state": node.state.value}

    def heartbeat(self, node: Node) -> dict[str, Any]:
        self.store.update_node(node.id, agent_last_seen=self.conductor.clock())
        self.conductor.metrics.heartbeat("agent")
        pending = []
        for cmd in self.store.pending_commands(node):
            self.store.set_command_status(cmd["id"], CommandStatus.SENT)
            sealed = cmd.pop("args_sealed", None)
            if sealed:
                cmd["args"] = json.loads(self.conductor.box.open(sealed).reveal())
            pending.append(cmd)
        return {"commands": pending, "heartbeat_interval": self.conductor.settings.agent_heartbeat_interval}

    def command_result(self, node: Node, command_id: str, body: dict[str, Any]) -> dict[str, Any]:
        cmd = self.store.command(command_id)
        if cmd["node_id"] != node.id:
            raise NotFound(f"no command {command_id!r} for node {node.name}")
        try:
            status = CommandStatus(str(body.get("status")))
        except ValueError:
            status = CommandStatus.PENDING  # not one an agent may report: refused below
        if status not in REPORTED:
            raise InvalidInput(f"status must be {', '.join(REPORTED)}")
        if cmd["status"] == CommandStatus.SUPERSEDED:
            return cmd
        raw = body.get("result")
        result: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if status != CommandStatus.RUNNING or cmd["status"] != CommandStatus.RUNNING:
            self.store.record_event(node, "command", f"agent: {cmd['kind']} {command_id} {status}"
                                    + (f": {result.get('error')}" if status == CommandStatus.FAILED else ""))
        self.store.set_command_status(command_id, status, result)
        if cmd["kind"] == CommandKind.DEPLOY and self.deploy is not None:
            node = self.store.node_by_id(node.id)
            if status == CommandStatus.RUNNING:
                self.deploy.progress(node, result)
            else:
                self.deploy.written(node, status == CommandStatus.DONE, deploy_result(result))
        return self.store.command(command_id)

    # -- the host agent -------------------------------------------------------
    def authenticate_host(self, token: str | None) -> Node:
        if not token:
            raise Unauthorized("host agent call without a token")
        node = self.store.node_by_host_token_hash(hash_token(token))
        if node is None:
            raise Unauthorized("invalid host agent token (the node was reimaged since?)")
        return node

    def host_heartbeat(self, node: Node, body: dict[str, Any]) -> dict[str, Any]:
        self.conductor.metrics.heartbeat("host")
        facts = body.get("facts")
        typed = HostFacts.parse(facts)
        if node.host_lost:
            self.store.record_event(node, "host", "host agent is back")
        self.store.update_node(node.id, host_last_seen=self.conductor.clock(), host_facts=facts, host_lost=0)
        if self.deploy is not None:
            self.deploy.host_reported(node, typed)
        interval = self.heartbeats.now.interval if self.heartbeats is not None \
            else self.conductor.settings.agent_host_heartbeat_interval
        return {"heartbeat_interval": interval}

    def queue_command(self, node: Node, name: str) -> dict[str, Any]:
        kind = next((c for c in COMMANDS if c == name), None)
        if kind is None:
            raise InvalidInput(f"unknown agent command {name!r}: use one of {', '.join(COMMANDS)}")
        if node.state not in (State.INSPECTING, State.READY) or not self.store.token_hash(node.id):
            raise Conflict(f"node {node.name} has no agent running")
        command = self.store.add_command(node, str(uuid.uuid4()), kind)
        self.store.record_event(node, "command", f"queued {kind} {command['id']} for the agent")
        return command
