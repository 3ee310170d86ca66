"""The closed vocabularies of jobs (their kinds and outcomes), of a job's members (nodes or
guests), of deploy plans, of guests, and of the API's kinds of caller. Each is written to
the database and the wire as its value, so a StrEnum compares equal to what was stored."""

from __future__ import annotations

from enum import StrEnum


class JobKind(StrEnum):
    REIMAGE = "reimage"
    ROLLBACK = "rollback"
    DEPLOY = "deploy"


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


class PlanAction(StrEnum):
    """What a deploy does to one guest."""
    ADD = "add"
    KEEP = "keep"
    REPAIR = "repair"
    ROLL = "roll"
    REMOVE = "remove"


class GuestState(StrEnum):
    PENDING = "pending"
    CREATING = "creating"
    REMOVING = "removing"
    RESETTING = "resetting"
    READY = "ready"
    FAILED = "failed"


GUEST_BUSY = (GuestState.PENDING, GuestState.CREATING, GuestState.REMOVING, GuestState.RESETTING)


class AuthKind(StrEnum):
    """Who may call a route: anyone, an operator (token or unix socket), a maintenance
    agent (its per-boot token) or a host agent (its per-deploy token)."""
    NONE = "none"
    OPERATOR = "operator"
    AGENT = "agent"
    HOST = "host"
