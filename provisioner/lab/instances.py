"""Labs as instances: what a lab's name derives (its namespace, state directory, socket,
libvirt), what its slot derives (subnet, MACs, bridge, dashboard port), and which labs
this machine has. Several labs run at once without seeing each other; the default lab
keeps the paths it always had."""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from ..errors import LabError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_NAME = "lab"
NAME = re.compile(r"[a-z][a-z0-9]{0,7}")
MAX_SLOT = 99  # 10.99.<slot>.0/24 for each lab; slot 0 is the default lab's
STATE_ROOT = Path("/var/lib")
NETNS_PREFIX = "provlab"
# Slots are handed out under this lock (two `lab up` at once must not take one slot).
LOCK = Path("/run/lock/provisioner-labs.lock")


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise LabError(f"lab name {name!r}: 1-8 lower-case letters and digits, starting with a letter")
    return name


@dataclass(frozen=True)
class LabConfig:
    """Where and how big the lab is; every field has a default that works here. Fields
    that depend on the name or the slot are properties, so that they cannot disagree."""

    name: str = DEFAULT_NAME
    slot: int = 0
    prefix: int = 24
    artifacts_dir: Path = REPO / "build/boot"
    bmc_base_port: int = 6230  # on the lab namespace's loopback: the same in every lab
    bmc_user: str = "admin"
    redfish_port: int = 8443
    http_port: int = 8080

    @property
    def default(self) -> bool:
        return self.name == DEFAULT_NAME

    # -- from the name -----------------------------------------------------------
    @property
    def netns(self) -> str:
        return NETNS_PREFIX if self.default else f"{NETNS_PREFIX}-{self.name}"

    @property
    def state_dir(self) -> Path:
        return STATE_ROOT / ("provisioner-lab" if self.default else f"provisioner-lab-{self.name}")

    @property
    def socket(self) -> Path:
        return Path("/run/provisioner") / ("api.sock" if self.default else f"lab-{self.name}.sock")

    # -- from the slot -----------------------------------------------------------
    def _host(self, last: int) -> str:
        return f"10.99.{self.slot}.{last}"

    @property
    def bridge(self) -> str:
        return f"provbr{self.slot}"

    @property
    def address(self) -> str:
        return self._host(1)

    @property
    def address6(self) -> str:  # for router advertisements (see dhcp.router_advertisements)
        return f"fd99:0:0:{self.slot:x}::1/64"

    @property
    def bridge_mac(self) -> str:  # locally administered
        return f"02:99:{self.slot:02x}:00:00:01"

    @property
    def mac_prefix(self) -> str:
        """The first four bytes of the lab's node MACs (the fifth is the rack, the sixth the node)."""
        return f"52:54:{self.slot:02x}:99"

    @property
    def dhcp_range(self) -> str:
        return f"{self._host(100)},{self._host(199)}"

    @property
    def guest_range(self) -> str:
        return f"{self._host(20)}-{self._host(59)}"

    @property
    def endpoint_range(self) -> str:
        return f"{self._host(60)}-{self._host(69)}"

    @property
    def unused_address(self) -> str:
        """An address on the lab's subnet that nothing answers."""
        return self._host(254)

    @property
    def dashboard_port(self) -> int:  # on this machine's loopback: the lab daemon's HTTP (its /ui)
        return 8180 + self.slot


def recorded_slot(name: str) -> int | None:
    """The slot a lab that is up (or half up) was given, from its state file."""
    state = LabConfig(name=name).state_dir / "lab.json"
    try:
        return int(json.loads(state.read_text()).get("slot", 0))
    except (OSError, ValueError):
        return None


def config_for(name: str = DEFAULT_NAME) -> LabConfig:
    """The lab called `name`, with the slot it was given if it is up."""
    check_name(name)
    cfg = LabConfig(name=name)
    slot = recorded_slot(name)
    return replace(cfg, slot=slot) if slot is not None else cfg


def names() -> list[str]:
    """Every lab this machine has, by its state directory or its namespace (a lab whose
    `up` was killed half-way may have only one of them)."""
    found = set()
    for path in STATE_ROOT.glob("provisioner-lab*"):
        if path.name == "provisioner-lab":
            found.add(DEFAULT_NAME)
        elif path.name.startswith("provisioner-lab-") and NAME.fullmatch(path.name[16:]):
            found.add(path.name[16:])
    for path in Path("/run/netns").glob(f"{NETNS_PREFIX}*"):
        if path.name == NETNS_PREFIX:
            found.add(DEFAULT_NAME)
        elif path.name.startswith(f"{NETNS_PREFIX}-") and NAME.fullmatch(path.name[len(NETNS_PREFIX) + 1:]):
            found.add(path.name[len(NETNS_PREFIX) + 1:])
    return sorted(found, key=lambda n: (n != DEFAULT_NAME, n))


@contextlib.contextmanager
def slot_for(name: str) -> Iterator[int]:
    """The lowest slot no other lab holds, for `name`, held under the machine's lab lock
    until the caller has recorded it (in the lab's state file)."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if name == DEFAULT_NAME:
            yield 0
            return
        taken = {recorded_slot(other) for other in names() if other != name}
        free = next((s for s in range(1, MAX_SLOT + 1) if s not in taken), None)
        if free is None:
            raise LabError(f"this machine already has {MAX_SLOT} labs: take one down first")
        yield free
