"""Host health, fencing and service healing. A host that runs guests is declared dead
only when two signals agree: its host agent has been silent past agent.host_lost_after, and either its
BMC says the power is off or every one of its guests in an endpoint fails its health
check (the BMC says on: the host hangs). One signal alone (an agent stopped, a host
partitioned from the provisioner while its guests still answer) is recorded and nothing
more. A dead host is powered off through its BMC, and the power state verified, before
any of its guests is started elsewhere, so a role never runs two copies of one guest; a
host that cannot be fenced keeps its guests where they are, loudly. Once fenced, the
host is out for repair and its guests are placed again on healthy hosts by a heal job
(workflows/guests.py), which a restarted daemon carries on."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Callable

from ..errors import InvalidTransition, NodeBusy, NotFound, PowerError, ProvisionerError
from ..models import Node, PowerAction, PowerState
from ..network.haproxy import Health
from ..states import Event, State
from ..statuses import GUEST_JOBS, GuestState
from .endpoints import EndpointService
from .engine import Conductor
from .guests import GuestService

LOG = logging.getLogger(__name__)


class Verdict(StrEnum):
    DEAD = "dead"  # both signals say so: fenced, then healed
    SUSPECT = "suspect"  # its agent is silent, the other signal says it lives: left alone
    UNCONFIRMED = "unconfirmed"  # its agent is silent and its BMC does not answer: cannot be fenced


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str


def judge(silent_for: float, power: PowerState | None, power_error: str | None, guests: list[Health]) -> Judgement:
    """The second signal, for a host whose agent has been silent `silent_for` seconds.
    Pure: the caller asks the BMC and the load balancer."""
    silent = f"its host agent has been silent for {silent_for:.0f}s"
    down = sum(1 for h in guests if h == Health.DOWN)
    if power_error is not None:
        return Judgement(Verdict.UNCONFIRMED, f"{silent} and its BMC does not answer ({power_error}): it can be "
                                              "neither confirmed dead nor fenced, so its guests are NOT moved")
    if power == PowerState.OFF:
        return Judgement(Verdict.DEAD, f"{silent} and its BMC says the power is off")
    if guests and down == len(guests):
        return Judgement(Verdict.DEAD, f"{silent} and all {len(guests)} of its guests in an endpoint fail their "
                                       f"health checks (its BMC says {power or 'nothing'}: the host hangs)")
    others = f"{len(guests) - down} of its {len(guests)} guests in an endpoint pass their health checks" \
        if guests else "no guest health check says otherwise"
    return Judgement(Verdict.SUSPECT, f"{silent}, but its BMC says the power is {power or 'unknown'} and {others}: "
                                      "not fenced on one signal (a stopped agent, or a network cut between it and "
                                      "the provisioner)")


class HostWatch:
    def __init__(self, conductor: Conductor, guests: GuestService, endpoints: EndpointService,
                 clock: Callable[[], float] = time.time) -> None:
        self.conductor = conductor
        self.store = conductor.store
        self.settings = conductor.settings
        self.guests = guests
        self.endpoints = endpoints
        self.clock = clock
        self._said: dict[int, Verdict] = {}  # the verdict last recorded per node: events only on change
        self._failed: dict[tuple[int, str], str] = {}  # a fence's or a heal's last failure, recorded once
        self._next_try: dict[int, float] = {}  # when a host not fenced, or not healed, is tried again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.settings.healing_enabled:
            LOG.info("healing: off (healing.enabled): silent hosts are only marked lost")
            return
        self._thread = threading.Thread(target=self._loop, name="host-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)  # a fence in flight is finished by the next daemon

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.healing_check_interval):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the watch must outlive one bad round
                LOG.exception("healing: a sweep failed")

    def sweep(self) -> None:
        """Hosts that run guests are judged: one that runs none has nothing at stake, and
        is only marked lost (an operator powering an idle host off is not a failure)."""
        # Only what can be at stake is read (by the state index): lost hosts, hosts out for
        # repair, and hosts the watch spoke of, not the fleet.
        judged: set[int] = set()
        for node in self.store.nodes_in((State.ACTIVE,), host_lost=True):
            if not self.conductor.holds(node.rack):
                continue  # its rack's controller judges it
            if node.host_last_seen is not None and self.store.guests(host=node.name):
                judged.add(node.id)
                self.look(node)
        for node in self.store.nodes_in((State.OUT_FOR_REPAIR,)):
            if self.conductor.holds(node.rack) and self.store.guests(host=node.name):
                judged.add(node.id)
                self.heal(node)
        for node_id in [i for i in self._said if i not in judged]:
            self._said.pop(node_id)
            try:
                node = self.store.node_by_id(node_id)
            except NotFound:
                continue
            if node.state == State.ACTIVE:
                self.store.record_event(node, "health", "host agent heard again: the host is alive")

    # -- judging and fencing ---------------------------------------------------------
    def look(self, node: Node) -> Judgement:
        if self.clock() < self._next_try.get(node.id, 0.0):
            return Judgement(self._said.get(node.id, Verdict.SUSPECT), "tried again later")
        try:
            power, error = self.conductor.power.status(self.conductor.bmc(node)), None
        except PowerError as exc:
            power, error = None, str(exc)
        health = self.endpoints.health(self.store.guests(host=node.name))
        verdict = judge(self.clock() - float(node.host_last_seen or 0), power, error, health)
        if self._said.get(node.id) != verdict.verdict:
            self._said[node.id] = verdict.verdict
            self.store.record_event(node, "health", f"{verdict.verdict}: {verdict.reason}")
            log = LOG.error if verdict.verdict == Verdict.UNCONFIRMED else LOG.warning
            log("node %s: %s: %s", node.name, verdict.verdict, verdict.reason)
        if verdict.verdict == Verdict.UNCONFIRMED:
            self._next_try[node.id] = self.clock() + self.settings.healing_retry_interval
        if verdict.verdict == Verdict.DEAD:
            self.fence(node, verdict.reason)
        return verdict

    def fence(self, node: Node, reason: str) -> bool:
        """Power the dead host off through its BMC, verified, then mark it out for repair
        and its guests lost; True when fenced. A host that cannot be fenced is left as it
        is (its guests may still run) and tried again after healing.retry_interval."""
        bmc = self.conductor.bmc(node)
        try:
            with self.conductor.node_lock(node, "fencing a dead host"):
                state = self.conductor.power.apply(bmc, PowerAction.OFF)  # verified, or PowerError
                self.store.update_node(node.id, power_state=state.value)
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                self.store.record_event(node, "fence", f"fenced: powered off through its BMC ({bmc.driver.label} "
                                                       f"{bmc.endpoint}) and verified off")
                for guest in self.store.guests(host=node.name):
                    self.endpoints.drain(guest["name"], wait=False)
                    self.store.set_guest(guest["name"], state=GuestState.LOST,
                                         last_error=f"its host {node.name} was declared dead and fenced at {stamp}: "
                                                    "being placed again elsewhere")
                self.store.transition(node, Event.FENCE, error=f"declared dead at {stamp}: {reason}; fenced through "
                                                                "its BMC. Reimage it to bring it back")
        except NodeBusy as exc:
            LOG.info("node %s: not fenced now: %s", node.name, exc)
            return False
        except InvalidTransition:
            return False  # it changed state meanwhile (an operator reimaged it)
        except PowerError as exc:
            self._next_try[node.id] = self.clock() + self.settings.healing_retry_interval
            message = (f"CANNOT FENCE: powering it off through its BMC failed ({exc}); its guests are NOT moved, "
                       f"as they may still run: power it off by hand, tried again in "
                       f"{self.settings.healing_retry_interval:.0f}s")
            self._failure(node, "fence", message)
            return False
        LOG.warning("node %s: declared dead and fenced (%s)", node.name, reason)
        self._said.pop(node.id, None)
        self._failed.pop((node.id, "fence"), None)
        self.heal(self.store.node_by_id(node.id))
        return True

    def _failure(self, node: Node, kind: str, message: str) -> None:
        """Logged as an error at every try; recorded in the node's events when it changes
        (a BMC that stays away must not fill the history with one line every retry)."""
        LOG.error("node %s: %s", node.name, message)
        if self._failed.get((node.id, kind)) != message:
            self._failed[(node.id, kind)] = message
            self.store.record_event(node, kind, message)

    # -- healing -----------------------------------------------------------------------
    def heal(self, node: Node) -> int | None:
        """A heal job for the guests still recorded on a host out for repair; None when it
        must wait (a guest job runs) or cannot be done now (the event says why)."""
        if self.clock() < self._next_try.get(node.id, 0.0):
            return None
        if self.store.running_job_ids(kind=GUEST_JOBS):
            return None  # a running heal job is carried on by GuestJobs; a deploy places them too
        self._next_try[node.id] = self.clock() + self.settings.healing_retry_interval
        try:
            job = self.guests.heal(node.name)
        except ProvisionerError as exc:
            message = f"its guests cannot be placed again now: {exc}; tried again in " \
                      f"{self.settings.healing_retry_interval:.0f}s"
            for guest in self.store.guests(host=node.name):
                self.store.set_guest(guest["name"], last_error=f"its host {node.name} is out for repair; {message}")
            self._failure(node, "heal", message)
            return None
        self._failed.pop((node.id, "heal"), None)
        if job is not None:
            self.store.record_event(node, "heal", f"heal job {job}: " +
                                    ", ".join(f"{e['guest']} to {e['host']}" for e in self.store.job_guests(job)))
        return job
