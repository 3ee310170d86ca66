"""Host heartbeats at fleet scale: the interval hosts are told (stretched when the fleet
is larger than the daemon's heartbeat budget, with the time to be lost stretched alike),
and the lost-host sweep, which marks no host lost while the control plane itself was too
busy to hear it (it turned requests away, or its own periodic work ran late)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from ..config import Settings
from ..states import State
from .engine import Conductor

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cadence:
    """How often hosts heartbeat, and how long one may be silent before it is lost."""
    interval: float
    lost_after: float


def cadence(settings: Settings, hosts: int) -> Cadence:
    """The configured cadence, stretched so that `hosts` heartbeats fit the budget:
    10,000 hosts at 50 per second heartbeat every 200 s, and are lost after 900 s."""
    base = settings.agent_host_heartbeat_interval
    stretch = max(1.0, hosts / (settings.agent_host_heartbeats_per_second * base))
    return Cadence(base * stretch, settings.agent_host_lost_after * stretch)


class Heartbeats:
    """The hosts' cadence for the fleet as it is, and the lost-host sweep."""

    def __init__(self, conductor: Conductor, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.conductor = conductor
        self.monotonic = monotonic
        self.now = cadence(conductor.settings, 0)
        self._said_busy = False
        conductor.periodic.append(self.sweep)

    def refresh(self) -> Cadence:
        self.now = cadence(self.conductor.settings, self.conductor.store.count_nodes(State.ACTIVE))
        return self.now

    def busy_within(self, seconds: float) -> str | None:
        """Why the control plane may not have heard its hosts in the last `seconds`."""
        mono = self.monotonic()
        for what, at in self.conductor.pressure():
            if at is not None and mono - at < seconds:
                return f"{what} {mono - at:.0f}s ago"
        return None

    def sweep(self) -> None:
        """An active host whose agent has been silent too long is marked lost, once; not
        while the daemon was too busy, within that time, to be sure the silence is the host's."""
        now = self.refresh()
        busy = self.busy_within(now.lost_after)
        if busy is not None:
            if not self._said_busy:
                LOG.warning("not marking any host lost: the control plane was too busy to hear them (%s)", busy)
                self._said_busy = True
            return
        self._said_busy = False
        limit = self.conductor.clock() - now.lost_after
        for node in self.conductor.store.silent_hosts(limit):
            if node.host_last_seen is None or not self.conductor.holds(node.rack):
                continue
            self.conductor.store.update_node(node.id, host_lost=1)
            self.conductor.metrics.host_lost()
            self.conductor.store.record_event(node, "host", "host agent silent: lost, last seen "
                                              + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(node.host_last_seen)))
            LOG.warning("node %s: host agent silent since %s", node.name, node.host_last_seen)
