"""Deploy jobs: a roles file's plan carried out on the hosts, batch by batch.

Batch 0 removes guests (scale down, roles gone), which frees their cores first; batch 1
adds guests (and repairs ones a failure or a restart left unfinished); batches 2+ roll
guests to a new spec (a new base or app image, new user data, a new size), one upgrade
domain per batch. Inside a batch, hosts are worked on in parallel and each host's guests
are created, then waited for. A batch with a failure stops the job: later upgrade
domains keep their old guests. Every step is "make it so": a guest is removed before it
is made again, so a job carried on after a daemon restart does no harm; a guest already
started when the daemon stopped is only waited for."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import HostError, NotFound, ProvisionerError
from ..guests.placement import Guest
from ..hypervisor.domains import GuestHost, ImageRef
from ..images import Catalog
from ..statuses import GUEST_JOBS, MEMBER_ENDED, GuestState, JobStatus, MemberStatus, MemberStep, PlanAction
from ..store import Store
from .batches import BatchEngine
from .endpoints import EndpointService
from .guesthosts import HostLinks, host_records

LOG = logging.getLogger(__name__)
REMOVE_BATCH, ADD_BATCH, FIRST_ROLL_BATCH = 0, 1, 2


def _reason(exc: Exception) -> str:
    if isinstance(exc, ProvisionerError):
        return str(exc)
    LOG.error("deploy: unexpected error", exc_info=exc)
    return f"internal error ({type(exc).__name__}: {exc}); see the daemon's log"


def guest_of(doc: dict[str, Any]) -> Guest:
    return Guest(doc["name"], doc["role"], int(doc["index"]), doc["host"], tuple(doc["cores"]),
                 int(doc["memory_mib"]), int(doc["upgrade_domain"]))


class GuestJobs:
    def __init__(self, store: Store, links: HostLinks, catalog: Catalog, ready_timeout: float,
                 max_parallel_hosts: int, endpoints: EndpointService) -> None:
        self.store = store
        self.endpoints = endpoints
        self.links = links
        self.catalog = catalog
        self.ready_timeout = ready_timeout
        self.max_parallel_hosts = max(1, max_parallel_hosts)
        self.threads: dict[int, threading.Thread] = {}
        self.engine = BatchEngine(store)

    def start(self, job_id: int) -> None:
        thread = threading.Thread(target=self._run, args=(job_id,), name=f"deploy-{job_id}", daemon=True)
        self.threads[job_id] = thread
        thread.start()

    def running(self) -> set[int]:
        return {job_id for job_id, thread in list(self.threads.items()) if thread.is_alive()}

    def run_batch(self, job_id: int, batch: int, returning: bool = False) -> list[str]:
        """A reimage job's guests for its node batch `batch`: before the nodes go, each is
        moved to its new host or stopped (returning=False); once they are back, the stopped
        ones are made again on them (returning=True). The guests that failed."""
        todo = [e for e in self.store.job_guests(job_id) if e["batch"] == batch and e["status"] not in MEMBER_ENDED]
        todo = [e for e in todo if (e["step"] == MemberStep.STOPPED) == returning]
        hosts = sorted({e["host"] for e in todo})
        with ThreadPoolExecutor(max_workers=self.max_parallel_hosts, thread_name_prefix=f"job-{job_id}") as pool:
            list(pool.map(lambda h: self._host(job_id, h, [e for e in todo if e["host"] == h]), hosts))
        return [e["guest"] for e in self.store.job_guests(job_id)
                if e["batch"] == batch and e["status"] == MemberStatus.FAILED]

    def fail_stopped(self, job_id: int, batch: int, host: str, why: str) -> None:
        """The guests stopped on a host that did not come back."""
        for e in self.store.job_guests(job_id):
            if e["batch"] == batch and e["host"] == host and e["step"] == MemberStep.STOPPED \
                    and e["status"] not in MEMBER_ENDED:
                self._fail(job_id, e, why)

    # -- the job ----------------------------------------------------------------
    def _run(self, job_id: int) -> None:
        try:
            status = self._batches(job_id)
        except Exception:
            LOG.exception("deploy job %d crashed", job_id)
            status = JobStatus.FAILED
        self.settle(job_id)
        self.endpoints.changed()  # guests the job never made are gone from their endpoints
        self.store.end_job(job_id, status)
        LOG.info("deploy job %d: %s", job_id, status)

    def _batches(self, job_id: int) -> JobStatus:
        """Batches of hosts: each host's share of a batch is one unit of work."""
        entries = self.store.job_guests(job_id)
        numbers = sorted({e["batch"] for e in entries})
        batches = [sorted({(b, e["host"]) for e in entries if e["batch"] == b}) for b in numbers]

        def share(unit: tuple[int, str]) -> None:
            batch, host = unit
            todo = [e for e in self.store.job_guests(job_id)
                    if e["batch"] == batch and e["host"] == host and e["status"] not in MEMBER_ENDED]
            if todo:  # ended before a restart: nothing left to do on this host
                self._host(job_id, host, todo)

        def failed(i: int) -> list[str]:
            return [e["guest"] for e in self.store.job_guests(job_id)
                    if e["batch"] == numbers[i] and e["status"] == MemberStatus.FAILED]

        return self.engine.run(job_id, batches, share, parallel=self.max_parallel_hosts, max_failures=0,
                               failed=failed)

    def settle(self, job_id: int) -> None:
        """No guest stays busy once the job ends: one whose step never ran is as it was
        before the job; one caught mid-step by a crash is failed (the next deploy repairs it)."""
        for e in self.store.job_guests(job_id):
            if e["status"] == MemberStatus.RUNNING:
                self._fail(job_id, e, "the deploy job stopped during this step (see the daemon's log)")
            elif e["status"] in (MemberStatus.PENDING, MemberStatus.SKIPPED):
                was = e["spec"].get("was")
                if was is None:
                    self.store.delete_guest(e["guest"])
                else:
                    self.store.set_guest(e["guest"], state=was)

    # -- one host's share of a batch ---------------------------------------------
    def _host(self, job_id: int, host_name: str, entries: list[dict[str, Any]]) -> None:
        try:
            record = host_records(self.store).get(host_name)
            if record is None:
                raise HostError(f"host {host_name} is gone")
            gh = self.links.guest_host(record)
        except Exception as exc:  # noqa: BLE001
            for e in entries:
                self._fail(job_id, e, _reason(exc))
            return
        try:
            started = []
            for e in entries:
                if e["status"] == MemberStatus.RUNNING and e["step"] == MemberStep.STARTED:
                    started.append(e)  # made and started before a daemon restart: only wait for it
                    continue
                self.store.set_job_member(job_id, e["guest"], MemberStatus.RUNNING, e["action"])
                try:
                    # Out of its endpoint before it is touched (a no-op for a new guest).
                    self.endpoints.drain(e["guest"])
                    if e["action"] == PlanAction.REMOVE:
                        gh.delete(e["guest"])
                        self.store.delete_guest(e["guest"])
                        self.endpoints.changed()
                        self.store.set_job_member(job_id, e["guest"], MemberStatus.DONE, f"removed from {host_name}")
                        continue
                    if e["action"] == PlanAction.STOP and e["step"] != MemberStep.STOPPED:
                        gh.delete(e["guest"], keep_console=True)
                        self.store.set_guest(e["guest"], state=GuestState.STOPPED, last_error=None,
                                             why=f"stopped on {host_name} while it is reimaged (job {job_id}), "
                                                 "made again there after")
                        self.store.set_job_member(job_id, e["guest"], MemberStatus.RUNNING,
                                                  f"stopped while {host_name} is reimaged", step=MemberStep.STOPPED)
                        continue
                    sent = self._create(job_id, gh, host_name, e)
                    self.store.set_job_member(job_id, e["guest"], MemberStatus.RUNNING, "booting", sent,
                                              step=MemberStep.STARTED)
                    started.append(e)
                except Exception as exc:  # noqa: BLE001 - one guest's failure is not its host's
                    self._fail(job_id, e, _reason(exc))
            for e in started:
                try:
                    seconds = gh.wait_ready(e["guest"], timeout=self.ready_timeout)
                    self.endpoints.admit(e["guest"])  # back in its endpoint once its health check passes
                except Exception as exc:  # noqa: BLE001
                    self._fail(job_id, e, _reason(exc))
                    continue
                self.store.set_guest(e["guest"], state=GuestState.READY, ready_seconds=round(seconds, 1),
                                     last_error=None)
                self.store.set_job_member(job_id, e["guest"], MemberStatus.DONE,
                                          f"ready on {host_name} in {seconds:.0f}s")
                LOG.info("guest %s: ready on %s after %.1fs", e["guest"], host_name, seconds)
        finally:
            gh.close()

    def _create(self, job_id: int, gh: GuestHost, host_name: str, e: dict[str, Any]) -> int:
        spec = e["spec"]
        guest = guest_of(spec["guest"])
        old_host = spec.get("old_host")
        why = {}
        if old_host and old_host != host_name:  # moved (resized, its host dead, gone or reimaged)
            record = host_records(self.store).get(old_host)
            if record is not None and not record.fenced:  # a fenced host is off: nothing to remove there
                with self.links.guest_host(record) as old:
                    old.delete(guest.name, keep_console=True)
            why = {"why": f"moved from {old_host} at {time.strftime('%Y-%m-%d %H:%M:%S')} because "
                          f"{spec.get('because') or 'it was placed again'}"}
        elif e["action"] == PlanAction.STOP:
            why = {"why": f"made again on {host_name} at {time.strftime('%Y-%m-%d %H:%M:%S')}, after its reimage"}
        gh.delete(guest.name, keep_console=True)  # whatever a failed or interrupted attempt left
        self.store.set_guest(guest.name, state=GuestState.CREATING, host=guest.host, cores=guest.cores,
                             memory_mib=guest.memory_mib, upgrade_domain=guest.upgrade_domain,
                             base_sha256=spec["base"]["sha256"], app_sha256=(spec.get("app") or {}).get("sha256"),
                             spec_sha256=spec["spec_sha256"], job_id=job_id, last_error=None, **why)
        known = self.store.host_images(host_name)
        base = self._image(spec["base"])
        app = self._image(spec["app"]) if spec.get("app") else None
        started = time.monotonic()
        network = spec.get("network")
        bridge = None
        if network:
            record = host_records(self.store).get(host_name)
            bridge = record.bridge if record is not None else None
            if not bridge:
                raise HostError(f"host {host_name} has no bridge for the guest network")
        sent = gh.create(guest, base, spec["files"], app, complete=lambda sha: sha in known,
                         uploaded=lambda sha: self.store.set_host_image(host_name, sha, True),
                         nic=(network["mac"], bridge) if network and bridge else None)
        LOG.info("guest %s: defined and started on %s in %.1fs (%d bytes of images sent)", guest.name, host_name,
                 time.monotonic() - started, sent)
        return sent

    def _image(self, doc: dict[str, Any]) -> ImageRef:
        try:
            path = self.catalog.local(doc["sha256"])
        except NotFound as exc:
            raise HostError(f"image {doc.get('ref') or doc['sha256'][:16]}: {exc}") from exc
        return ImageRef(doc["sha256"], doc["format"], int(doc["size"]), int(doc["virtual_size"]),
                        lambda: path.open("rb"))

    def _fail(self, job_id: int, e: dict[str, Any], why: str) -> None:
        LOG.warning("guest %s: %s failed: %s", e["guest"], e["action"], why)
        self.store.set_job_member(job_id, e["guest"], MemberStatus.FAILED, why)
        self.store.set_guest(e["guest"], state=GuestState.FAILED, last_error=why)
