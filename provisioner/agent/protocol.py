"""What the daemon and the agents say to each other about commands: their kinds and
statuses. Standard library only: the maintenance image's python3 imports it."""

from __future__ import annotations

from enum import StrEnum
from typing import NotRequired, TypedDict


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


# -- the deploy command: what the daemon sends, and what the agent reports back ----------

class DeployImage(TypedDict):
    sha256: str
    format: str
    size: int
    url: str  # on the daemon: GET it with the agent's token (Range requests resume)


class DeployNode(TypedDict):
    name: str
    mac: str


class DeployHostAgent(TypedDict):
    api: str | None  # None: the address the maintenance agent used
    token: str


class DeploySsh(TypedDict):
    host_key: str
    host_key_pub: str
    authorized_keys: list[str]


class DeployMulticast(TypedDict):
    """A multicast session the agent may join for the image (udpcast's udp-receiver)."""
    session: str
    rendezvous: str  # the group sender and receivers meet on
    portbase: int
    start_timeout: float  # no start in this long: give up, HTTP
    receive_timeout: float  # silence mid-session this long: give up, HTTP for the rest


class DeployArgs(TypedDict):
    image: DeployImage
    keep: list[str]  # bases to keep beside this one (for --to-previous)
    previous: str | None
    no_transfer: bool  # a rollback: the base must already be on the disk
    node: DeployNode
    host_agent: DeployHostAgent
    ssh: DeploySsh
    kernel_args: str
    multicast: NotRequired[DeployMulticast]


class DeployResult(TypedDict, total=False):
    disk: str
    base_sha256: str
    transferred_bytes: int
    multicast_bytes: int  # of transferred_bytes, received over multicast
    http_bytes: int  # over HTTP (all of it, or what multicast missed)
    reused: bool
    seconds: dict[str, float]
    boot_entry: str  # UEFI: the firmware's Boot#### entry the deploy made for the disk
    error: str  # when it failed


def deploy_result(doc: object) -> DeployResult:
    """A deploy command's reported result, keeping only fields of the right type (the
    report comes from the network; nothing else in it is read)."""
    if not isinstance(doc, dict):
        return {}
    out: DeployResult = {}
    if isinstance(doc.get("disk"), str):
        out["disk"] = doc["disk"]
    if isinstance(doc.get("base_sha256"), str):
        out["base_sha256"] = doc["base_sha256"]
    for key in ("transferred_bytes", "multicast_bytes", "http_bytes"):
        if isinstance(doc.get(key), int) and not isinstance(doc.get(key), bool) and doc[key] >= 0:
            out[key] = doc[key]
    if isinstance(doc.get("reused"), bool):
        out["reused"] = doc["reused"]
    if isinstance(doc.get("boot_entry"), str) and len(doc["boot_entry"]) == 4 and doc["boot_entry"].isalnum():
        out["boot_entry"] = doc["boot_entry"]
    if isinstance(doc.get("error"), str):
        out["error"] = doc["error"]
    return out
