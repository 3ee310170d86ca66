"""The conductor: a worker pool, one lock per node so two operations never touch a
node at once, the deadline reaper, and resumption of in-progress work after a restart."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator

from ..config import Settings
from ..errors import InvalidTransition, NodeBusy, PowerError
from ..models import BmcCredentials, BootDevice, Node, PowerAction
from ..power import PowerManager
from ..secrets import SecretBox
from ..states import STEP_LABELS, Event, State, Step
from ..store import Store
from ..telemetry import Metrics

LOG = logging.getLogger(__name__)


class Conductor:
    def __init__(self, settings: Settings, store: Store, power: PowerManager, box: SecretBox,
                 clock: Callable[[], float] = time.time, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.power = power
        self.metrics = metrics or Metrics()
        self.box = box
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=settings.server_workers,
                                        thread_name_prefix="worker")
        self._locks: dict[int, threading.Lock] = {}
        self._busy: dict[int, str] = {}
        self._locks_guard = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self.resumers: list[Callable[[Node], None]] = []
        self.periodic: list[Callable[[], None]] = []  # run with each deadline check
        # Signs the control plane is too busy to hear its nodes: (what, monotonic time of
        # the last one); the daemon adds the API's refusals, the reaper its own lateness.
        self.pressure_sources: list[tuple[str, Callable[[], float | None]]] = []
        self.stalled_at: float | None = None
        # The racks this controller holds (controllers.py keeps it); None: every rack.
        self.racks: set[str] | None = None
        self.claim_rack: Callable[[str], bool] = lambda rack: False  # take a new rack now
        self._queued: set[int] = set()  # nodes with work submitted here, not yet ended

    # -- locking --------------------------------------------------------------
    def _lock_for(self, node_id: int) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(node_id, threading.Lock())

    @contextmanager
    def node_lock(self, node: Node, what: str, job: int | None = None) -> Iterator[None]:
        """Exclusive access to one node, refused at once (NodeBusy) if someone holds it
        or a job other than `job` has claimed it."""
        claimed = self.store.node_by_id(node.id).job_id
        if claimed is not None and claimed != job:
            raise NodeBusy(node=node.name, what=f"it is part of job {claimed} (see 'provisioner job {claimed}')")
        lock = self._lock_for(node.id)
        if not lock.acquire(blocking=False):
            raise NodeBusy(node=node.name, what=self._busy.get(node.id, "another operation"))
        self._busy[node.id] = what
        try:
            yield
        finally:
            self._busy.pop(node.id, None)
            lock.release()

    def serves(self, rack: str) -> bool:
        """Whether this controller works the nodes of `rack` (it holds the rack's lease);
        a rack no controller has yet is claimed on the spot."""
        if self.racks is None or rack in self.racks:
            return True
        return self.claim_rack(rack)

    def holds(self, rack: str) -> bool:
        """Whether this controller holds the rack now (no claim is made)."""
        return self.racks is None or rack in self.racks

    def working(self, node_id: int) -> bool:
        """Work for the node is queued or running here."""
        with self._locks_guard:
            return node_id in self._queued

    def submit(self, node: Node, what: str, fn: Callable[[Node], None],
               job: int | None = None) -> Future[None] | None:
        """Run fn(node) on a worker, holding the node's lock (as part of `job`, if given).
        Only for a node of a rack this controller serves: the rack's own controller takes
        up the node's work otherwise (controllers.py), as after a restart."""
        if not self.serves(node.rack):
            LOG.info("node %s: %s left to the controller of %s", node.name, what, node.rack)
            return None
        with self._locks_guard:
            self._queued.add(node.id)

        def run() -> None:
            try:
                with self.node_lock(node, what, job=job):
                    fn(self.store.node_by_id(node.id))
            except NodeBusy as exc:
                LOG.warning("node %s: %s skipped: %s", node.name, what, exc)
            except Exception:
                LOG.exception("node %s: %s crashed", node.name, what)
            finally:
                with self._locks_guard:
                    self._queued.discard(node.id)
        return self._pool.submit(run)

    def boot_maintenance(self, node: Node, state: State, deadline: Callable[[Step], float],
                         fail: Callable[[Node, str], None]) -> None:
        """The power steps into the maintenance image, shared by every workflow that needs
        the agent: one-time network boot, power cycle, then wait for the agent. Both steps
        are safe to repeat, so a resumed node redoes them from the start (the one-time boot
        device may have been spent by a boot we did not see)."""
        if node.state != state or node.step not in (Step.SET_BOOT_DEVICE, Step.POWER_ON):
            return
        bmc = self.bmc(node)
        try:
            if node.step != Step.SET_BOOT_DEVICE:
                node = self.store.set_step(node, Step.SET_BOOT_DEVICE, deadline(Step.SET_BOOT_DEVICE),
                                           expect_state=state, message="retrying after restart")
            # A Secure Boot node boots the maintenance image with Secure Boot off: iPXE is not signed.
            self.power.set_boot_device(bmc, BootDevice.NETWORK, node.boot_mode,
                                       secure_boot=False if node.secure_boot else None)
            sb = " (Secure Boot off: iPXE is not signed)" if node.secure_boot else ""
            node = self.store.set_step(node, Step.POWER_ON, deadline(Step.POWER_ON), expect_state=state,
                                       message=f"one-time network boot set via {bmc.driver.label} {bmc.endpoint}{sb}")
            # Cycle rather than on: a machine that is already running must reboot into PXE.
            power = self.power.apply(bmc, PowerAction.CYCLE)
            self.store.update_node(node.id, power_state=power.value)
            self.store.set_step(node, Step.WAIT_AGENT, deadline(Step.WAIT_AGENT), expect_state=state,
                                message=f"powered on via {bmc.driver.label} {bmc.endpoint}")
        except PowerError as exc:
            LOG.error("node %s: %s failed at %s: %s", node.name, state, node.step, exc)
            fail(node, f"{node.step}: {exc}")
        except InvalidTransition as exc:
            LOG.info("node %s: %s stopped: %s", node.name, state, exc)

    def bmc(self, node: Node) -> BmcCredentials:
        return BmcCredentials(address=node.bmc_address, port=node.bmc_port,
                              username=node.bmc_username,
                              password=self.box.open(self.store.sealed_password(node.id)),
                              cipher_suite=node.cipher_suite, driver=node.bmc_driver, system=node.bmc_system)

    # -- deadlines and restarts ----------------------------------------------
    def start(self) -> None:
        for node in self.store.in_progress():
            self.store.record_event(node, "resume", f"daemon started: resuming {node.state} at step {node.step}")
            LOG.info("node %s: resuming %s at step %s", node.name, node.state, node.step)
            for resume in self.resumers:
                resume(node)
        self._reaper = threading.Thread(target=self._reap_loop, name="deadlines", daemon=True)
        self._reaper.start()

    def _reap_loop(self) -> None:
        interval = self.settings.timeouts_deadline_check
        slack = max(2.0, interval)
        while True:
            asleep = time.monotonic()
            if self._stop.wait(interval):
                return
            started = time.monotonic()
            for check in [self.reap_deadlines, *self.periodic]:
                try:
                    check()
                except Exception:
                    LOG.exception("periodic check %s failed", getattr(check, "__name__", check))
            ended = time.monotonic()
            # Woken late, or the checks took long: the daemon is starved of time.
            if started - asleep - interval > slack or ended - started > slack:
                self.stalled_at = ended

    def pressure(self) -> list[tuple[str, float | None]]:
        return [("its periodic work ran late", self.stalled_at),
                *((what, source()) for what, source in self.pressure_sources)]

    def reap_deadlines(self) -> list[str]:
        """Fail every in-progress node whose step deadline has passed; their names."""
        failed = []
        now = self.clock()
        for node in self.store.in_progress(overdue_at=now):  # only the overdue: a flat cost per tick
            if node.deadline is None or node.deadline > now or not self.serves(node.rack):
                continue
            lock = self._lock_for(node.id)
            if not lock.acquire(blocking=False):
                continue  # a worker is on it; its own timeouts end the step
            try:
                label = STEP_LABELS.get(node.step, str(node.step)) if node.step else "work"
                reason = f"step {node.step} ({label}) timed out at its deadline"
                self.store.transition(node, Event.FAIL, error=reason)
                failed.append(node.name)
            except InvalidTransition:
                pass  # it finished between our read and our write
            finally:
                lock.release()
        return failed

    def pause(self, seconds: float) -> bool:
        """Sleep, or less if the conductor stops meanwhile; True when it is stopping."""
        return self._stop.wait(seconds)

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._reaper:
            self._reaper.join(timeout=5)
