"""The node state machine as data: states, the transition table, and which
in-progress state fails into which failed state. Pure: no I/O."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    ENROLLED = "enrolled"
    INSPECTING = "inspecting"
    READY = "ready"
    INSPECT_FAILED = "inspect-failed"


class Event(StrEnum):
    INSPECT = "inspect"
    DONE = "done"
    FAIL = "fail"


# Stable states wait for an operator; in-progress states have a target and a deadline.
STABLE = frozenset({State.ENROLLED, State.READY, State.INSPECT_FAILED})
IN_PROGRESS: dict[State, State] = {State.INSPECTING: State.READY}  # state -> target
FAILED_STATES = frozenset({State.INSPECT_FAILED})

TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.ENROLLED, Event.INSPECT): State.INSPECTING,
    (State.READY, Event.INSPECT): State.INSPECTING,
    (State.INSPECT_FAILED, Event.INSPECT): State.INSPECTING,
    (State.INSPECTING, Event.DONE): State.READY,
    (State.INSPECTING, Event.FAIL): State.INSPECT_FAILED,
}

# States from which a node may be deleted (never in the middle of work).
DELETABLE = STABLE


class Step(StrEnum):
    """The steps of an in-progress state, in order; each has its own deadline."""

    SET_BOOT_DEVICE = "set-boot-device"
    POWER_ON = "power-on"
    WAIT_AGENT = "wait-agent"
    WAIT_INSPECTION = "wait-inspection"


INSPECT_STEPS = (Step.SET_BOOT_DEVICE, Step.POWER_ON, Step.WAIT_AGENT, Step.WAIT_INSPECTION)
# Steps a worker drives; the others advance when the agent calls the API.
ACTIVE_STEPS = frozenset({Step.SET_BOOT_DEVICE, Step.POWER_ON})

STEP_LABELS = {
    Step.SET_BOOT_DEVICE: "setting one-time network boot",
    Step.POWER_ON: "powering on",
    Step.WAIT_AGENT: "waiting for the agent to boot",
    Step.WAIT_INSPECTION: "inspecting hardware",
}


def next_state(state: State, event: Event) -> State | None:
    """The state `event` leads to from `state`, or None when the table forbids it."""
    return TRANSITIONS.get((state, event))


def is_in_progress(state: State) -> bool:
    return state in IN_PROGRESS
