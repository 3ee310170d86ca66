"""The daemon's own counters and histograms, fed by the code that does the work through
small typed calls (a BMC command, a step ended, a heartbeat, bytes served), and the
exposition of them with the fleet's gauges (fleet.py) at GET /metrics.

Each daemon has its own registry, so several in one process (tests) do not mix."""

from __future__ import annotations

import threading
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

# Step durations run from a second (a boot device) to an hour (an image over a slow link).
STEP_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf"))
BMC_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, float("inf"))


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._steps: dict[int, tuple[str, float]] = {}  # node id -> (step, since)
        self._lock = threading.Lock()
        r = self.registry
        self.transitions = Counter("provisioner_node_transitions", "Node state transitions this daemon wrote",
                                   ["from_state", "to_state"], registry=r)
        self.steps = Histogram("provisioner_step_duration_seconds",
                               "Time nodes spent in each step of inspection and deployment (steps this daemon "
                               "saw begin and end)", ["state", "step"], buckets=STEP_BUCKETS, registry=r)
        self.bmc = Histogram("provisioner_bmc_command_duration_seconds", "BMC commands, by driver and command",
                             ["driver", "command"], buckets=BMC_BUCKETS, registry=r)
        self.bmc_errors = Counter("provisioner_bmc_command_errors", "BMC commands that failed, by kind of error",
                                  ["driver", "command", "error"], registry=r)
        self.heartbeats = Counter("provisioner_agent_heartbeats", "Heartbeats from agents (maintenance image) "
                                  "and host agents", ["agent"], registry=r)
        self.hosts_lost = Counter("provisioner_hosts_lost", "Active hosts marked lost (host agent silent)",
                                  registry=r)
        self.http_requests = Counter("provisioner_http_requests", "HTTP requests answered, by method and status class",
                                     ["method", "status"], registry=r)
        self.http_bytes = Counter("provisioner_http_response_bytes", "Bytes of HTTP responses sent", registry=r)

    def add(self, collector: Collector) -> None:
        """A collector read at each scrape (the fleet's gauges)."""
        self.registry.register(collector)

    # -- what the work reports ------------------------------------------------------
    def moved(self, node_id: int, from_state: str, to_state: str, step: str | None) -> None:
        """A node moved (the store's on_move): a transition when the state changed, and the
        step it was in ends as it enters `step` (None: it left its steps)."""
        if from_state != to_state:
            self.transitions.labels(from_state=from_state, to_state=to_state).inc()
        now = self._clock()
        with self._lock:
            previous = self._steps.pop(node_id, None)
            if step is not None:
                self._steps[node_id] = (step, now)
        if previous is not None:
            self.steps.labels(state=from_state, step=previous[0]).observe(max(0.0, now - previous[1]))

    def bmc_command(self, driver: str, command: str, seconds: float, error: str | None) -> None:
        self.bmc.labels(driver=driver, command=command).observe(seconds)
        if error is not None:
            self.bmc_errors.labels(driver=driver, command=command, error=error).inc()

    def heartbeat(self, agent: str) -> None:
        self.heartbeats.labels(agent=agent).inc()

    def host_lost(self) -> None:
        self.hosts_lost.inc()

    def http(self, method: str, status: int, sent: int) -> None:
        self.http_requests.labels(method=method if method in _METHODS else "other", status=f"{status // 100}xx").inc()
        self.http_bytes.inc(sent)

    # -- exposition ---------------------------------------------------------------------
    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})
