"""The closed vocabularies of jobs (their kinds and outcomes), of a job's members (nodes or
guests), of deploy plans, of guests, and of the API's kinds of caller. Each is written to
the database and the wire as its value, so a StrEnum compares equal to what was stored."""

from __future__ import annotations

from enum import StrEnum


class JobKind(StrEnum):
    REIMAGE = "reimage"
    ROLLBACK = "rollback"
    DEPLOY = "deploy"
    HEAL = "heal"  # a dead host's guests placed again elsewhere


# Jobs over guests (job_guests), carried on by GuestJobs after a restart.
GUEST_JOBS = (JobKind.DEPLOY, JobKind.HEAL)


class JobStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    ABORTED = "aborted"  # an operator asked; members not started were skipped
    STOPPED = "stopped"  # a batch failed beyond its threshold; later batches were skipped



class MemberStatus(StrEnum):
    """A job's node or guest."""
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


MEMBER_ENDED = (MemberStatus.DONE, MemberStatus.FAILED, MemberStatus.SKIPPED)


class MemberStep(StrEnum):
    """How far a running member got, where a restarted daemon must know it."""
    STARTED = "started"  # a guest's domain is made and started: a resumed job only waits for it
    STOPPED = "stopped"  # a guest is off while its host is reimaged: made again once the host is back


class PlanAction(StrEnum):
    """What a deploy does to one guest."""
    ADD = "add"
    KEEP = "keep"
    REPAIR = "repair"
    ROLL = "roll"
    REMOVE = "remove"
    MOVE = "move"  # to another host (its host is dead, or about to be reimaged): same name, address
    STOP = "stop"  # off while its host is reimaged, then made again there


class GuestState(StrEnum):
    PENDING = "pending"
    CREATING = "creating"
    REMOVING = "removing"
    RESETTING = "resetting"
    READY = "ready"
    FAILED = "failed"
    LOST = "lost"  # its host was declared dead: healing places it again elsewhere
    STOPPED = "stopped"  # off while its host is reimaged; made again there after


GUEST_BUSY = (GuestState.PENDING, GuestState.CREATING, GuestState.REMOVING, GuestState.RESETTING,
              GuestState.STOPPED)


class AuthKind(StrEnum):
    """Who may call a route: anyone, an operator (token or unix socket), a maintenance
    agent (its per-boot token) or a host agent (its per-deploy token)."""
    NONE = "none"
    OPERATOR = "operator"
    AGENT = "agent"
    HOST = "host"
    PEER = "peer"  # another controller of the same fleet (the shared key's token)
