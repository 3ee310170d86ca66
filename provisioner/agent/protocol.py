"""What the daemon and the agents say to each other about commands: their kinds and
statuses. Standard library only: the maintenance image's python3 imports it."""

from __future__ import annotations

from enum import StrEnum


class CommandKind(StrEnum):
    DEPLOY = "deploy"
    POWEROFF = "poweroff"
    REBOOT = "reboot"


class CommandStatus(StrEnum):
    PENDING = "pending"  # queued, not yet handed to the agent
    SENT = "sent"  # handed over with a heartbeat's answer
    RUNNING = "running"  # the agent reports progress
    DONE = "done"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # a newer command of its kind replaced it before it ended


REPORTED = (CommandStatus.RUNNING, CommandStatus.DONE, CommandStatus.FAILED)  # what an agent may report
