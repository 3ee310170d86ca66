"""How API objects look on the wire (shared by the API and the CLI's --json)."""

from __future__ import annotations

import time
from typing import Any

from ..agent.protocol import CommandKind, CommandStatus
from ..models import Node
from ..states import Step
from ..store import Store


def agent_status(node: Node, lost_after: float, now: float | None = None) -> str:
    if node.agent_last_seen is None:
        return "none"
    now = time.time() if now is None else now
    return "alive" if now - node.agent_last_seen <= lost_after else "lost"


def node_view(node: Node, lost_after: float) -> dict[str, Any]:
    doc = node.public()
    doc["agent"] = agent_status(node, lost_after)
    if node.host_last_seen is not None:
        doc["agent"] = "host lost" if node.host_lost else "host alive"
    doc["hardware"] = node.hardware.view() if node.hardware else None
    return doc


def deploy_progress(store: Store, node_id: int, step: str | None) -> dict[str, Any] | None:
    """What the agent last said while writing an image: phase, and bytes of total."""
    if step != Step.WRITE_IMAGE.value:
        return None
    command = store.last_command(node_id, CommandKind.DEPLOY, status=CommandStatus.RUNNING)
    result = (command or {}).get("result")
    return result if isinstance(result, dict) else None


def job_view(store: Store, job: dict[str, Any]) -> dict[str, Any]:
    for member in job["nodes"]:
        member["progress"] = deploy_progress(store, int(member["node_id"]), member.get("step"))
    return job


def image_ref(store: Store, sha256: str | None) -> str | None:
    """NAME:VERSION of an image by its sha256 (the newest name it was imported under),
    or its short sha256 if the catalog no longer has it."""
    if not sha256:
        return None
    rows = store.images_by_sha(sha256)
    return f"{rows[-1]['name']}:{rows[-1]['version']}" if rows else sha256[:12]
