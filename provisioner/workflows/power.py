"""Power on/off/cycle/status for a target: a node (name or MAC) or a whole rack, the
nodes of a rack in parallel, each under its node lock."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import NodeBusy, NotFound, PowerError
from ..models import Node, PowerAction
from .engine import Conductor

LOG = logging.getLogger(__name__)


def resolve_target(conductor: Conductor, target: str) -> list[Node]:
    """Nodes named by `target`: a node name, id or MAC first, then a rack, then a tag
    (`tag:NAME` asks for the tag only), or `all`."""
    nodes = conductor.store.list_nodes()
    if target == "all":
        if not nodes:
            raise NotFound("no nodes enrolled yet")
        return nodes
    if target.startswith("tag:"):
        tagged = [n for n in nodes if target[4:] in n.tags]
        if not tagged:
            raise NotFound(f"no node carries the tag {target[4:]!r}: see 'provisioner nodes'")
        return tagged
    try:
        return [conductor.store.get_node(target)]
    except NotFound:
        pass
    chosen = [n for n in nodes if n.rack == target] or [n for n in nodes if target in n.tags]
    if not chosen:
        raise NotFound(f"no node, rack or tag named {target!r}: see 'provisioner nodes'")
    return chosen


class PowerService:
    def __init__(self, conductor: Conductor) -> None:
        self.conductor = conductor

    def _one(self, node: Node, action: PowerAction) -> dict[str, Any]:
        bmc = self.conductor.bmc(node)
        try:
            with self.conductor.node_lock(node, f"power {action}"):
                state = self.conductor.power.apply(bmc, action)
                self.conductor.store.update_node(node.id, power_state=state.value)
                if action != PowerAction.STATUS:
                    self.conductor.store.record_event(node, "power",
                                              f"power {action} via {bmc.driver.label} {bmc.endpoint}: now {state}")
                return {"node": node.name, "power_state": state.value, "ok": True}
        except (PowerError, NodeBusy) as exc:
            LOG.error("node %s: power %s failed: %s", node.name, action, exc)
            return {"node": node.name, "ok": False, "error": str(exc)}

    def apply(self, target: str, action: PowerAction) -> list[dict[str, Any]]:
        nodes = resolve_target(self.conductor, target)
        with ThreadPoolExecutor(max_workers=min(len(nodes), 16)) as pool:
            return list(pool.map(lambda n: self._one(n, action), nodes))
