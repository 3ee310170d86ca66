"""The node state machine as data: states, the transition table, and which
in-progress state fails into which failed state. Pure: no I/O."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    ENROLLED = "enrolled"
    INSPECTING = "inspecting"
    READY = "ready"
    INSPECT_FAILED = "inspect-failed"
    DEPLOYING = "deploying"
    ACTIVE = "active"
    DEPLOY_FAILED = "deploy-failed"
    # A host declared dead and fenced (powered off through its BMC): its guests run
    # elsewhere; it comes back by being reimaged (or inspected first).
    OUT_FOR_REPAIR = "out-for-repair"


class Event(StrEnum):
    INSPECT = "inspect"
    DEPLOY = "deploy"
    DONE = "done"
    FAIL = "fail"
    FENCE = "fence"


# Stable states wait for an operator; in-progress states have a target and a deadline.
STABLE = frozenset({State.ENROLLED, State.READY, State.INSPECT_FAILED, State.ACTIVE, State.DEPLOY_FAILED,
                    State.OUT_FOR_REPAIR})
IN_PROGRESS: dict[State, State] = {State.INSPECTING: State.READY,  # state -> target
                                   State.DEPLOYING: State.ACTIVE}
FAILED_STATES = frozenset({State.INSPECT_FAILED, State.DEPLOY_FAILED})
# States whose reason is kept in the node's last_error.
REASONED = FAILED_STATES | {State.OUT_FOR_REPAIR}
# States a deploy (reimage, rollback) may start from.
DEPLOYABLE = frozenset({State.READY, State.ACTIVE, State.DEPLOY_FAILED, State.OUT_FOR_REPAIR})

TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.ENROLLED, Event.INSPECT): State.INSPECTING,
    (State.READY, Event.INSPECT): State.INSPECTING,
    (State.INSPECT_FAILED, Event.INSPECT): State.INSPECTING,
    (State.INSPECTING, Event.DONE): State.READY,
    (State.INSPECTING, Event.FAIL): State.INSPECT_FAILED,
    (State.READY, Event.DEPLOY): State.DEPLOYING,
    (State.ACTIVE, Event.DEPLOY): State.DEPLOYING,
    (State.DEPLOY_FAILED, Event.DEPLOY): State.DEPLOYING,
    (State.DEPLOYING, Event.DONE): State.ACTIVE,
    (State.DEPLOYING, Event.FAIL): State.DEPLOY_FAILED,
    (State.ACTIVE, Event.INSPECT): State.INSPECTING,
    (State.DEPLOY_FAILED, Event.INSPECT): State.INSPECTING,
    (State.ACTIVE, Event.FENCE): State.OUT_FOR_REPAIR,
    (State.OUT_FOR_REPAIR, Event.DEPLOY): State.DEPLOYING,
    (State.OUT_FOR_REPAIR, Event.INSPECT): State.INSPECTING,
}

# States from which a node may be deleted (never in the middle of work).
DELETABLE = STABLE


class Step(StrEnum):
    """The steps of an in-progress state, in order; each has its own deadline."""

    SET_BOOT_DEVICE = "set-boot-device"
    POWER_ON = "power-on"
    WAIT_AGENT = "wait-agent"
    WAIT_INSPECTION = "wait-inspection"
    WRITE_IMAGE = "write-image"
    BOOT_DISK = "boot-from-disk"
    WAIT_HOST = "wait-host"


INSPECT_STEPS = (Step.SET_BOOT_DEVICE, Step.POWER_ON, Step.WAIT_AGENT, Step.WAIT_INSPECTION)
DEPLOY_STEPS = (Step.SET_BOOT_DEVICE, Step.POWER_ON, Step.WAIT_AGENT, Step.WRITE_IMAGE, Step.BOOT_DISK,
                Step.WAIT_HOST)
# Steps a worker drives; the others advance when an agent calls the API.
ACTIVE_STEPS = frozenset({Step.SET_BOOT_DEVICE, Step.POWER_ON, Step.BOOT_DISK})

STEP_LABELS = {
    Step.SET_BOOT_DEVICE: "setting one-time network boot",
    Step.POWER_ON: "powering on",
    Step.WAIT_AGENT: "waiting for the agent to boot",
    Step.WAIT_INSPECTION: "inspecting hardware",
    Step.WRITE_IMAGE: "laying the image down",
    Step.BOOT_DISK: "switching to boot from disk",
    Step.WAIT_HOST: "waiting for the host agent",
}


def next_state(state: State, event: Event) -> State | None:
    """The state `event` leads to from `state`, or None when the table forbids it."""
    return TRANSITIONS.get((state, event))


def is_in_progress(state: State) -> bool:
    return state in IN_PROGRESS
