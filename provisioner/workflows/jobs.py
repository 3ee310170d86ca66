"""Jobs: reimage or roll back many nodes, upgrade domain by upgrade domain. A job claims
its nodes, runs each batch with bounded parallelism, lets a failed node fail alone, and
stops before the next batch when a batch's failures pass the threshold. Jobs live in the
database, so a restarted daemon carries a running job on without starting a node twice."""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any

from ..agent.protocol import CommandKind, deploy_result
from ..errors import Conflict, InvalidInput, NotFound, ProvisionerError
from ..images import Catalog, Image
from ..models import Node
from ..statuses import MEMBER_ENDED, JobKind, JobStatus, MemberStatus
from ..states import DEPLOYABLE, State
from .batches import BatchEngine
from .deploy import DeployFlow
from .engine import Conductor
from .guestjobs import GuestJobs
from .hostmoves import HostMoves, moves_doc
from .multicast import MulticastService
from .power import resolve_target

LOG = logging.getLogger(__name__)


def parse_limit(text: str | int | None, total: int, default: int, what: str) -> int:
    """N or P% of `total` (at least 1 when a percentage is given)."""
    if text is None or text == "":
        return default
    raw = str(text).strip()
    try:
        if raw.endswith("%"):
            pct = float(raw[:-1])
            if not 0 <= pct <= 100:
                raise ValueError
            return max(1, math.floor(total * pct / 100))
        value = int(raw)
        if value < 0:
            raise ValueError
        return value
    except ValueError as exc:
        raise InvalidInput(f"{what} must be a count (3) or a percentage (25%), not {raw!r}") from exc


@dataclass(frozen=True)
class Plan:
    kind: JobKind
    target: str
    image: Image | None
    batches: list[list[Node]]
    max_parallel: int
    max_unavailable: int
    max_failures: int
    to_previous: bool
    multicast: bool = True  # batches may share a multicast session (reimage)
    guests: list[dict[str, Any]] = field(default_factory=list)  # moved or stopped off each batch's hosts first

    def doc(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target,
                "image": None if self.image is None else {"ref": self.image.ref, "sha256": self.image.sha256},
                "max_parallel": self.max_parallel, "max_unavailable": self.max_unavailable,
                "max_failures": self.max_failures, "to_previous": self.to_previous,
                "multicast": self.multicast,
                "batches": [[n.name for n in batch] for batch in self.batches],
                "guests": moves_doc(self.guests)}


class _Stopping(Exception):
    """The daemon is stopping while a job waits on its nodes."""


class JobRunner:
    def __init__(self, conductor: Conductor, deploy: DeployFlow, catalog: Catalog,
                 multicast: MulticastService | None = None) -> None:
        self.conductor = conductor
        self.multicast = multicast
        self.deploy = deploy
        self.catalog = catalog
        self._threads: dict[int, threading.Thread] = {}
        # A node's transition made here wakes its member at once; one made by another
        # controller (on a shared PostgreSQL) is seen at this poll.
        self.poll = 1.0 if conductor.store.engine == "postgresql" else 5.0
        self.engine = BatchEngine(conductor.store)
        # Set once the guest side is built (services.py): reimages then mind the hosts' guests.
        self.moves: HostMoves | None = None
        self.guest_jobs: GuestJobs | None = None

    # -- planning -------------------------------------------------------------
    def upgrade_domain(self, node: Node, rack_nodes: list[Node]) -> int:
        if node.upgrade_domain is not None:
            return node.upgrade_domain
        names = sorted(n.name for n in rack_nodes)
        return names.index(node.name) % max(1, self.conductor.settings.reimage_upgrade_domains)

    def plan(self, kind: JobKind, target: str, image_ref: str | None = None, *, max_parallel: Any = None,
             max_unavailable: Any = None, max_failures: Any = None, to_previous: bool = False,
             multicast: bool = True, force: bool = False) -> Plan:
        nodes = resolve_target(self.conductor, target)
        wrong = [f"{n.name} ({n.state})" for n in nodes if n.state not in DEPLOYABLE]
        if wrong:
            raise Conflict(f"cannot {kind} {', '.join(wrong)}: a node must be ready, active, deploy-failed or out-for-repair")
        image: Image | None = None
        if kind == JobKind.REIMAGE:
            if image_ref:
                image = self.catalog.resolve(image_ref)
            else:
                current = {n.image_sha256 for n in nodes}
                if len(current) != 1 or None in current:
                    raise InvalidInput("say which image: --image NAME[:VERSION] "
                                       "(the nodes do not all run the same one)")
                image = self.catalog.image_by_sha(str(current.pop()))
        else:
            missing = [n.name for n in nodes if not (n.previous_image_sha256 if to_previous else n.image_sha256)]
            if missing:
                what = "no previous image" if to_previous else "never been deployed"
                raise Conflict(f"cannot roll back {', '.join(missing)}: {what}")
        total = len(nodes)
        parallel = parse_limit(max_parallel, total, self.conductor.settings.server_workers, "--max-parallel") or 1
        unavailable = parse_limit(max_unavailable, total, max(1, total // 2), "--max-unavailable") or 1
        failures = parse_limit(max_failures, total, 0, "--max-failures")
        racks: dict[str, list[Node]] = {}
        for n in self.conductor.store.list_nodes():
            racks.setdefault(n.rack, []).append(n)
        domains: dict[int, list[Node]] = {}
        for n in nodes:
            domains.setdefault(self.upgrade_domain(n, racks[n.rack]), []).append(n)
        batches: list[list[Node]] = []
        for ud in sorted(domains):
            members = sorted(domains[ud], key=lambda n: (n.rack, n.name))
            batches += [members[i:i + unavailable] for i in range(0, len(members), unavailable)]
        guests: list[dict[str, Any]] = []
        if self.moves is not None:
            batches, guests = self.moves.plan(batches, kind, force)
        return Plan(kind, target, image, batches, parallel, unavailable, failures, to_previous,
                    multicast and kind == JobKind.REIMAGE, guests)

    # -- running --------------------------------------------------------------
    def start(self, plan: Plan) -> int:
        options = plan.doc()
        options["image_sha256"] = plan.image.sha256 if plan.image else None
        members = [(n.id, i) for i, batch in enumerate(plan.batches) for n in batch]
        job_id = self.conductor.store.create_job(plan.kind, plan.target, options, members, plan.guests)
        LOG.info("job %d: %s %s, %d nodes in %d batches", job_id, plan.kind, plan.target, len(members),
                 len(plan.batches))
        self._spawn(job_id)
        return job_id

    def running(self) -> set[int]:
        """Jobs a thread of this process runs now."""
        return {job_id for job_id, thread in list(self._threads.items()) if thread.is_alive()}

    def take_up(self, job_id: int) -> None:
        """Run a job this controller claimed: its own after a restart, or one whose
        controller died. What its members already did is in the database."""
        LOG.info("job %d: carried on", job_id)
        self._spawn(job_id)

    def abort(self, job_id: int | None = None) -> dict[str, Any]:
        running = self.conductor.store.running_job_ids()
        if job_id is None:
            if not running:
                raise NotFound("no job is running")
            job_id = running[-1]
        self.conductor.store.request_abort(job_id)
        return self.conductor.store.job(job_id)

    def _spawn(self, job_id: int) -> None:
        thread = threading.Thread(target=self._run, args=(job_id,), name=f"job-{job_id}", daemon=True)
        self._threads[job_id] = thread
        thread.start()

    def stop(self) -> None:
        """Let the job threads go before the store closes (the conductor is stopping: they
        leave their jobs running in the store, for the next start to resume)."""
        self.conductor.store.wake_all()
        for thread in list(self._threads.values()):
            thread.join(timeout=self.poll + 5)

    def _run(self, job_id: int) -> None:
        try:
            status = self._batches(job_id)
        except _Stopping:
            LOG.info("job %d: left running for the next start to resume", job_id)
            return
        except Exception:
            LOG.exception("job %d crashed", job_id)
            status = JobStatus.FAILED
        if self.guest_jobs is not None and self.conductor.store.job_guests(job_id):
            self.guest_jobs.settle(job_id)  # none left busy: stopped ones whose host failed are failed
            self.guest_jobs.endpoints.changed()
        self.conductor.store.end_job(job_id, status)
        LOG.info("job %d: %s", job_id, status)

    def _batches(self, job_id: int) -> JobStatus:
        job = self.conductor.store.job(job_id)
        options = job["options"]
        by_batch: dict[int, list[dict[str, Any]]] = {}
        for member in job["nodes"]:
            by_batch.setdefault(int(member["batch"]), []).append(member)
        batches = [by_batch[b] for b in sorted(by_batch)]

        def failed(i: int) -> list[str]:
            names = {m["name"] for m in batches[i]}
            return [m["name"] for m in self.conductor.store.job(job_id)["nodes"]
                    if m["name"] in names and m["status"] == MemberStatus.FAILED]

        guests = self.guest_jobs is not None and bool(self.conductor.store.job_guests(job_id))
        return self.engine.run(job_id, batches, lambda m: self._one(job_id, m, options),
                               parallel=int(options["max_parallel"]), max_failures=int(options["max_failures"]),
                               failed=failed, before=lambda i: self._open_batch(job_id, i, batches[i], options, guests),
                               after=lambda i: self._close_batch(job_id, i, batches[i], guests))

    def _open_batch(self, job_id: int, i: int, members: list[dict[str, Any]], options: dict[str, Any],
                    guests: bool) -> None:
        """The batch's guests moved (or stopped) first; its nodes fail if that fails."""
        if guests and self.guest_jobs is not None and not self.conductor.store.job_aborted(job_id):
            failed = self.guest_jobs.run_batch(job_id, i)
            if failed:
                why = f"not started: its guests could not be moved first ({', '.join(failed)}; see the job's guests)"
                for m in members:
                    if m["status"] == MemberStatus.PENDING:
                        self.conductor.store.set_job_member(job_id, int(m["node_id"]), MemberStatus.FAILED, why)
                return
        self._open_multicast(job_id, i, members, options)

    def _open_multicast(self, job_id: int, i: int, members: list[dict[str, Any]], options: dict[str, Any]) -> None:
        """A multicast session for a reimage batch starting afresh (a batch resumed after a
        restart has its nodes already receiving: they finish over HTTP)."""
        if self.multicast is None or options["kind"] != JobKind.REIMAGE:
            return
        if options.get("multicast") is False:
            if i == 0:
                self.conductor.store.add_job_note(job_id, "multicast off for this job (--no-multicast): HTTP")
            return
        if any(m["status"] != MemberStatus.PENDING for m in members):
            self.conductor.store.add_job_note(job_id, f"batch {i + 1} resumed: no multicast session, HTTP")
            return
        if self.conductor.store.job_aborted(job_id):
            return
        image = self.catalog.image_by_sha(str(options["image_sha256"]))
        nodes = [self.conductor.store.node_by_id(int(m["node_id"])) for m in members]
        note = self.multicast.open_batch(job_id, i, image, nodes)
        if note:
            self.conductor.store.add_job_note(job_id, f"batch {i + 1}: {note}")

    def _close_batch(self, job_id: int, i: int, members: list[dict[str, Any]], guests: bool) -> None:
        self._close_multicast(job_id, i, members)
        if not guests or self.guest_jobs is None:
            return
        # The guests stopped for the batch, made again on their hosts that came back.
        nodes = {m["name"]: m for m in self.conductor.store.job(job_id)["nodes"] if m["batch"] == i}
        for host, m in nodes.items():
            if m["state"] != State.ACTIVE:
                self.guest_jobs.fail_stopped(job_id, i, host, f"its host {host} did not come back "
                                                              f"({m['last_error'] or m['state']})")
        self.guest_jobs.run_batch(job_id, i, returning=True)

    def _close_multicast(self, job_id: int, i: int, members: list[dict[str, Any]]) -> None:
        if self.multicast is None:
            return
        stats = self.multicast.close_batch(job_id, i)
        if stats is not None:
            # What the batch's nodes that came back received, as their agents reported.
            ids = {int(m["node_id"]) for m in members}
            http = 0
            for m in self.conductor.store.job(job_id)["nodes"]:
                if int(m["node_id"]) in ids and m["status"] == MemberStatus.DONE:
                    command = self.conductor.store.last_command(int(m["node_id"]), CommandKind.DEPLOY)
                    result = deploy_result((command or {}).get("result"))
                    http += result.get("http_bytes", result.get("transferred_bytes", 0))
            stats["http_bytes"] = http
            self.conductor.store.add_job_session(job_id, stats)
            if stats.get("note"):
                self.conductor.store.add_job_note(job_id, str(stats["note"]))

    def _one(self, job_id: int, member: dict[str, Any], options: dict[str, Any]) -> MemberStatus:
        node_id = int(member["node_id"])
        if member["status"] in MEMBER_ENDED:
            return MemberStatus(member["status"])
        node = self.conductor.store.node_by_id(node_id)
        # Pending but deploying: the daemon died between starting it and noting that.
        if member["status"] == MemberStatus.PENDING and node.state != State.DEPLOYING:
            if self.conductor.store.job_owner(job_id) not in (None, self.conductor.store.controller):
                raise _Stopping()  # another controller took the job over: it starts the rest
            if self.conductor.store.job_aborted(job_id):
                self.conductor.store.set_job_member(job_id, node_id, MemberStatus.SKIPPED, "job aborted")
                return MemberStatus.SKIPPED
            try:
                if options["kind"] == JobKind.ROLLBACK:
                    sha = node.previous_image_sha256 if options["to_previous"] else node.image_sha256
                    image = self.catalog.image_by_sha(str(sha))
                    why = "rollback to previous" if options["to_previous"] else "rollback"
                    self.deploy.start(node, image, job=job_id, no_transfer=True, why=why)
                else:
                    image = self.catalog.image_by_sha(str(options["image_sha256"]))
                    self.deploy.start(node, image, job=job_id, why="reimage")
                self.conductor.store.set_job_member(job_id, node_id, MemberStatus.RUNNING, f"{options['kind']} started")
            except ProvisionerError as exc:
                self.conductor.store.set_job_member(job_id, node_id, MemberStatus.FAILED, str(exc))
                return MemberStatus.FAILED
        # Running (now or before a restart): wait for the node to leave deploying. Its
        # transition wakes this wait; the poll only catches what another process changed.
        while True:
            with self.conductor.store.watching(node_id) as changed:
                if self.conductor.store.node_state(node_id) != State.DEPLOYING:
                    break
                changed.wait(self.poll)
            if self.conductor.pause(0):
                raise _Stopping()
        node = self.conductor.store.node_by_id(node_id)
        if node.state == State.ACTIVE:
            transferred, how = self._transferred(node)
            self.conductor.store.set_job_member(job_id, node_id, MemberStatus.DONE, f"active{how}", transferred)
            return MemberStatus.DONE
        self.conductor.store.set_job_member(job_id, node_id, MemberStatus.FAILED,
                                            node.last_error or f"ended {node.state}")
        return MemberStatus.FAILED

    def _transferred(self, node: Node) -> tuple[int | None, str]:
        """Image bytes the node's last deploy command received, as its agent reported, and
        by which path."""
        command = self.conductor.store.last_command(node.id, CommandKind.DEPLOY)
        result = deploy_result((command or {}).get("result"))
        value = result.get("transferred_bytes")
        if result.get("reused"):
            how = ": base already on disk"
        elif result.get("multicast_bytes"):
            how = f": multicast {result['multicast_bytes']} + HTTP {result.get('http_bytes', 0)} bytes"
        else:
            how = ": HTTP" if value else ""
        return (int(value) if isinstance(value, int) else None), how
