"""This daemon as one of the fleet's controllers (one database, several daemons; one
alone is the usual case). On every tick of the conductor it renews its row and its racks'
leases and takes the racks it should (store/controllers.py says which); it takes up the
in-progress nodes of its racks that no one here works on (a controller died, or another
one started the work), and the running jobs whose controller's lease ran out. A claim is
a row with a lease: nothing is agreed between controllers but through the database."""

from __future__ import annotations

import logging
from typing import Callable

from ..config import Settings
from ..statuses import JobKind
from ..states import ACTIVE_STEPS
from ..store import Store
from .engine import Conductor

LOG = logging.getLogger(__name__)


class ControllerRole:
    def __init__(self, settings: Settings, store: Store, conductor: Conductor,
                 on_racks_changed: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.on_racks_changed = on_racks_changed  # e.g. DHCP answers only this controller's racks' nodes
        self.store = store
        self.conductor = conductor
        self.name = settings.controller
        self.wants = settings.serving_racks
        self.address = ""
        self.held: set[str] = set()
        self.known: set[str] = set()  # every rack of the fleet at the last claim round
        self._adopted: dict[int, str] = {}  # node id: the step it was taken up at (said once)
        # Set by services.py: the jobs running here, and how to run an adopted one.
        self.running_jobs: Callable[[], set[int]] = set
        self.run_job: Callable[[int, JobKind], None] = lambda job_id, kind: None
        store.controller = self.name
        store.lease_seconds = settings.controller_lease

    def start(self, address: str = "") -> None:
        """Register, take this controller's racks, and make the conductor work only them."""
        self.address = address
        self.store.register_controller(self.name, address, self.wants)
        self._claim()
        self.conductor.claim_rack = self._claim_now
        self.conductor.periodic.insert(0, self.tick)
        LOG.info("controller %s: serving %s", self.name, ", ".join(sorted(self.held)) or "no rack yet")

    def stop(self) -> None:
        self.store.retire_controller(self.name)

    def _claim(self) -> tuple[set[str], set[str]]:
        """One claim round; (racks gained, racks lost)."""
        held, self.known = self.store.claim_racks(self.name, self.wants)
        gained, lost = held - self.held, self.held - held
        self.held = held
        self.conductor.racks = set(held)
        return gained, lost

    def _claim_now(self, rack: str) -> bool:
        """A rack the conductor has not seen (a node was just enrolled in it)."""
        if self._claim()[0]:
            self.on_racks_changed()
        return rack in self.held

    def knows(self, racks: set[str]) -> None:
        """Claim at once if any of `racks` is new to the fleet (no callback: the caller is
        the one that would be called)."""
        if racks - self.known:
            self._claim()

    def tick(self) -> None:
        gained, lost = self._claim()
        for rack in sorted(gained):
            LOG.warning("controller %s: now serving %s", self.name, rack)
        for rack in sorted(lost):
            LOG.warning("controller %s: no longer serving %s", self.name, rack)
        if gained or lost:
            self.on_racks_changed()
        self.adopt_nodes()
        self.adopt_jobs()

    def adopt_nodes(self) -> None:
        """In-progress nodes of this controller's racks at a step a controller works (power,
        boot device) that nothing here is working on: taken up as after a restart."""
        for node in self.store.in_progress(steps=tuple(ACTIVE_STEPS)):
            if node.step not in ACTIVE_STEPS or node.rack not in self.held or self.conductor.working(node.id):
                continue
            if self._adopted.get(node.id) != node.step:
                self._adopted[node.id] = str(node.step)
                LOG.warning("node %s: taken up by controller %s at step %s", node.name, self.name, node.step)
                self.store.record_event(node, "controller", f"taken up by controller {self.name} at step {node.step}")
            for resume in self.conductor.resumers:
                resume(node)

    def adopt_jobs(self, own: bool = False) -> None:
        """Jobs whose owner's lease ran out; with `own` (at start), this controller's too."""
        running = self.running_jobs()
        self.store.renew_jobs(self.name, running)
        for job_id, kind in self.store.claim_jobs(self.name, running, own=own):
            LOG.warning("job %d (%s): taken up by controller %s", job_id, kind, self.name)
            self.run_job(job_id, kind)
