"""Operator labels on a node: tags, which name groups of nodes as targets (power,
reimage, rollback) next to racks, and the node's upgrade domain, which overrides the
default spread (its index by name within its rack, modulo reimage.upgrade_domains)."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInput
from ..models import Node, validate_name
from ..store import Store

MAX_TAGS = 32
RESERVED = ("all",)


def _tags(raw: Any, what: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise InvalidInput(f"{what} must be a list of tag names")
    for tag in raw:
        validate_name(tag, "tag")
        if tag in RESERVED:
            raise InvalidInput(f"{tag!r} cannot be a tag: it already means every node")
    return raw


def set_labels(store: Store, node: Node, body: dict[str, Any]) -> Node:
    """Add and remove tags, set or clear ('auto') the upgrade domain; all or nothing."""
    add, remove = _tags(body.get("add_tags"), "add_tags"), _tags(body.get("remove_tags"), "remove_tags")
    changes: dict[str, Any] = {}
    if add or remove:
        tags = sorted((set(node.tags) | set(add)) - set(remove))
        if len(tags) > MAX_TAGS:
            raise InvalidInput(f"a node may carry at most {MAX_TAGS} tags")
        changes["tags"] = tags
    if "upgrade_domain" in body:
        ud = body["upgrade_domain"]
        if ud in (None, "auto"):
            changes["upgrade_domain"] = None
        elif isinstance(ud, int) and not isinstance(ud, bool) and 0 <= ud < 1000:
            changes["upgrade_domain"] = ud
        else:
            raise InvalidInput(f"upgrade_domain must be a number from 0 to 999 or 'auto', not {ud!r}")
    if not changes:
        raise InvalidInput("nothing to change: give add_tags, remove_tags or upgrade_domain")
    store.update_node(node.id, **changes)
    return store.node_by_id(node.id)
