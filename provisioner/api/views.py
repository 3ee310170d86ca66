"""How API objects look on the wire (shared by the API and the CLI's --json)."""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from ..agent.protocol import CommandKind, CommandStatus
from ..errors import InvalidInput
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


def image_refs(store: Store) -> dict[str, str]:
    """NAME:VERSION by sha256 for the whole catalog (the newest name of each), read once
    for a page of nodes rather than once per node."""
    refs: dict[str, str] = {}
    for row in sorted(store.images(), key=lambda r: int(r["id"])):
        refs[row["sha256"]] = f"{row['name']}:{row['version']}"
    return refs


def image_ref(store: Store, sha256: str | None, refs: dict[str, str] | None = None) -> str | None:
    """NAME:VERSION of an image by its sha256 (the newest name it was imported under),
    or its short sha256 if the catalog no longer has it."""
    if not sha256:
        return None
    if refs is not None:
        return refs.get(sha256, sha256[:12])
    rows = store.images_by_sha(sha256)
    return f"{rows[-1]['name']}:{rows[-1]['version']}" if rows else sha256[:12]


def page_limit(req: Any, *, default: int, most: int) -> int:
    raw = req.query.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise InvalidInput(f"limit must be a number from 1 to {most}")
    return int(raw)


def cursor_for(rack: str, name: str) -> str:
    """An opaque cursor: the last (rack, name) of a page."""
    return base64.urlsafe_b64encode(json.dumps([rack, name]).encode()).decode().rstrip("=")


def cursor_of(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        rack, name = json.loads(raw)
        if not isinstance(rack, str) or not isinstance(name, str):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput("cursor is not one this API gave: start again without it") from exc
    return rack, name
