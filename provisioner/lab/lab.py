"""`provisioner lab up|status|down`: bring the whole virtual lab up, report on it, and
take it down leaving nothing behind (namespace, processes, domains, disks, files)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2

from ..client import Client
from ..errors import LabError, ProvisionerError
from ..models import BmcDriver
from . import hypervisor, instances, system
from .bmc import VirtualBmcs
from .instances import DEFAULT_NAME, LabConfig
from .postgres import PgServer
from .redfish import SECURE_BOOT_CODE, SECURE_BOOT_VARS, RedfishEmulator

LOG = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
TEMPLATES = Path(__file__).parent / "templates"


# What `lab up --firmware/--bmc` accept; "mixed" gives odd racks the first kind, even racks
# the second (rack-1 BIOS and IPMI, rack-2 UEFI and Redfish, ...).
FIRMWARES = ("bios", "uefi", "mixed")
SECURE_BOOTS = ("off", "on", "mixed")  # mixed: UEFI nodes with an even number in their rack
BMC_KINDS = (BmcDriver.IPMI.value, BmcDriver.REDFISH.value, "mixed")


def _pick(choice: str, rack_no: int, first: str, second: str) -> str:
    return choice if choice != "mixed" else (first if rack_no % 2 else second)


@dataclass
class LabNode:
    name: str
    mac: str
    rack: str
    bmc_port: int
    memory_mib: int
    vcpus: int
    disk_gib: int
    uefi: bool
    bmc_driver: str = BmcDriver.IPMI.value
    system: str | None = None  # Redfish: the domain's system path at the emulator
    secure_boot: bool = False  # UEFI with Secure Boot enforced, Microsoft's keys enrolled


@dataclass
class LabState:
    nodes: list[LabNode] = field(default_factory=list)
    daemon_pid: int | None = None
    forward_pid: int | None = None  # the dashboard port (forward.py)
    created_at: float = 0.0
    # True when Vagrant makes the nodes (the Vagrantfile): the lab then also offers a libvirt
    # network and storage pool, both named after the namespace, and adopts each node.
    vagrant: bool = False
    database: str = "sqlite"  # or "postgresql": a PostgreSQL of the lab's own (postgres.py)
    slot: int = 0  # what its subnet, MACs, bridge and dashboard port derive from (instances.py)
    # The daemon's settings beyond the lab's file (SECTION.KEY -> value, as `serve --set`).
    settings: dict[str, str] = field(default_factory=dict)


DATABASES = ("sqlite", "postgresql")


class Lab:
    def __init__(self, name: str = DEFAULT_NAME, config: LabConfig | None = None) -> None:
        self.cfg = config or instances.config_for(name)
        self.dir = self.cfg.state_dir
        self.state_file = self.dir / "lab.json"
        self.libvirt = hypervisor.LabLibvirt(self.cfg.netns, self.dir / "libvirt")
        self.bmcs = VirtualBmcs(self.libvirt.inside, self.cfg.netns, self.dir / "bmc", self.dir / "logs/vbmcd.log")
        self.redfish = RedfishEmulator(self.libvirt.inside, self.cfg.netns, self.dir / "redfish",
                                       self.dir / "logs/sushy-emulator.log", self.cfg.redfish_port)
        self._jinja = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                                         undefined=jinja2.StrictUndefined, autoescape=True)

    # -- state ----------------------------------------------------------------
    def load(self) -> LabState | None:
        if not self.state_file.exists():
            return None
        doc = json.loads(self.state_file.read_text())
        return LabState(nodes=[LabNode(**n) for n in doc["nodes"]], daemon_pid=doc.get("daemon_pid"),
                        forward_pid=doc.get("forward_pid"),
                        created_at=doc.get("created_at", 0.0), vagrant=doc.get("vagrant", False),
                        database=doc.get("database", "sqlite"), slot=doc.get("slot", self.cfg.slot), settings=doc.get("settings", {}))

    def save(self, state: LabState) -> None:
        self.state_file.write_text(json.dumps(asdict(state), indent=1) + "\n")

    @property
    def inventory_file(self) -> Path:
        return self.dir / "inventory.yaml"

    @property
    def postgres(self) -> PgServer:
        return PgServer(directory=self.dir / "postgresql")

    @property
    def guest_pool(self) -> Path:
        return self.dir / "guest-pool"

    def console_log(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.console.log"

    def client(self) -> Client:
        return Client(f"unix://{self.cfg.socket}", timeout=30)

    def connect(self) -> Any:
        """A libvirt connection to the lab's own libvirtd (the caller closes it)."""
        return self.libvirt.connect()

    # -- up -------------------------------------------------------------------
    def up(self, nodes: int = 2, racks: int = 2, memory_mib: int = 2048, vcpus: int = 2,
           disk_gib: int = 20, firmware: str = "bios", bmc: str = "ipmi", progress: Any = None,
           vagrant: bool = False, secure_boot: str = "off", database: str = "sqlite",
           settings: dict[str, str] | None = None) -> LabState:
        """The lab: namespace, bridge, libvirtd, virtual BMCs, the daemon and `nodes` PXE
        domains. With `vagrant`, no domains: the Vagrantfile makes them on the libvirt network
        and pool offered here, and its trigger calls `adopt` for each. `settings` are the
        daemon's beyond the lab's file (`serve --set`), kept across its restarts."""
        say = progress or (lambda msg: None)
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, libvirtd)")
        if not vagrant and (not 1 <= nodes <= 50 or not 1 <= racks <= nodes):
            raise LabError("the lab needs 1-50 nodes and between 1 and that many racks")
        if firmware not in FIRMWARES or bmc not in BMC_KINDS:
            raise LabError(f"firmware is one of {', '.join(FIRMWARES)} and bmc one of {', '.join(BMC_KINDS)}")
        if secure_boot not in SECURE_BOOTS:
            raise LabError(f"secure boot is one of {', '.join(SECURE_BOOTS)}")
        if database not in DATABASES:
            raise LabError(f"the database is one of {', '.join(DATABASES)}")
        if secure_boot != "off" and (firmware == "bios" or not (bmc == "redfish" or bmc == firmware == "mixed")):
            raise LabError("Secure Boot needs UEFI nodes behind Redfish BMCs: the BMC switches it off for "
                           "maintenance boots (iPXE is not signed)")
        self._claim(vagrant, database, settings or {})
        try:
            shape = dict(memory_mib=memory_mib, vcpus=vcpus, disk_gib=disk_gib, firmware=firmware, bmc=bmc,
                         secure_boot=secure_boot)
            return self._up(0 if vagrant else nodes, racks, shape, say, vagrant, database)
        except BaseException:
            say("lab up failed: removing what it created")
            self.down()
            raise

    def _claim(self, vagrant: bool, database: str, settings: dict[str, str]) -> None:
        """The lab's slot and state file, taken under the machine's lab lock, so that two
        labs coming up at once get two slots."""
        with instances.slot_for(self.cfg.name) as slot:
            if self.load() is not None or system.netns_exists(self.cfg.netns):
                which = "" if self.cfg.default else f" --name {self.cfg.name}"
                raise LabError(f"lab {self.cfg.name} is already up: 'provisioner lab down{which}' first")
            self.cfg = replace(self.cfg, slot=slot)
            for sub in ("disks", "logs", "bmc", "passwords", "data"):
                (self.dir / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(self.dir, 0o755)
            self.save(LabState(created_at=time.time(), vagrant=vagrant, database=database, slot=slot, settings=dict(settings)))

    def _up(self, nodes: int, racks: int, shape: dict[str, Any], say: Any, vagrant: bool,
            database: str = "sqlite") -> LabState:
        cfg = self.cfg
        state = self.load() or LabState()
        if database == "postgresql":
            say(f"PostgreSQL for the daemon, on a unix socket in {self.postgres.dir}")
            self.postgres.start()
        say("building the maintenance image (cached when nothing changed)")
        build = subprocess.run([sys.executable, str(REPO / "images/maintenance/build.py"),
                                "--out", str(cfg.artifacts_dir / "maintenance")], capture_output=True, text=True)
        if build.returncode != 0:
            raise LabError(f"maintenance image build failed: {build.stderr.strip()}")
        say(build.stdout.strip())
        say(f"network namespace {cfg.netns}, bridge {cfg.bridge} {cfg.address}/{cfg.prefix}")
        system.run(["ip", "netns", "add", cfg.netns])
        system.run(["ip", "link", "set", "lo", "up"], netns=cfg.netns)
        # The bridge's own MAC, set: a bridge that has none takes its lowest port's, and so
        # changes whenever a node's tap goes away (each power cycle), which left the other
        # nodes' ARP entries for the daemon pointing at nothing for up to a minute (measured:
        # an agent's report timed out while its rack-mate rebooted).
        system.run(["ip", "link", "add", cfg.bridge, "address", cfg.bridge_mac, "type", "bridge", "stp_state", "0",
                    "forward_delay", "0"], netns=cfg.netns)
        system.run(["ip", "addr", "add", f"{cfg.address}/{cfg.prefix}", "dev", cfg.bridge], netns=cfg.netns)
        system.run(["ip", "-6", "addr", "add", cfg.address6, "dev", cfg.bridge, "nodad"], netns=cfg.netns)
        system.run(["ip", "link", "set", cfg.bridge, "up"], netns=cfg.netns)
        say(f"libvirtd and virtlogd of the lab's own, inside the namespace ({self.libvirt.uri})")
        self.libvirt.start()
        conn = self.libvirt.connect()
        if vagrant:
            say(f"libvirt network and storage pool '{cfg.netns}' for Vagrant (the bridge; no libvirt DHCP)")
            hypervisor.offer_network(conn, cfg.netns, cfg.bridge)
            hypervisor.offer_pool(conn, cfg.netns, self.dir / "disks")
        self.bmcs.start()
        for i in range(nodes):
            self._make_node(conn, state, i, racks, shape, say)
        conn.close()
        redfish = [n for n in state.nodes if n.bmc_driver == BmcDriver.REDFISH]
        if redfish:
            say(f"Redfish BMC (sushy-emulator) at {self.redfish.url} for {', '.join(n.name for n in redfish)}")
            self.redfish.start(cfg.bmc_user, self.password_file("redfish").read_text().strip(),
                               [n.name for n in redfish] + [str(n.system).rsplit("/", 1)[1] for n in redfish])
        self._write_inventory(state)
        say("provisioner daemon inside the namespace")
        state.daemon_pid = self._start_daemon()
        state.forward_pid = self._start_forward(say)
        self.save(state)
        return state

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.dashboard_port}/ui"

    def _start_forward(self, say: Any) -> int | None:
        """The dashboard port on this machine's loopback (None, with a warning, if taken)."""
        with (self.dir / "logs/forward.log").open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "provisioner.lab.forward", self.cfg.netns, self.cfg.address,
                                     str(self.cfg.http_port), str(self.cfg.dashboard_port)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)

        def listening() -> bool:
            if proc.poll() is not None:
                return True
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", self.cfg.dashboard_port)) == 0

        system.wait_for(listening, 10, "the dashboard port")
        if proc.poll() is not None:
            say(f"dashboard port 127.0.0.1:{self.cfg.dashboard_port} is taken: the dashboard is only reachable "
                f"inside the namespace (see {self.dir / 'logs/forward.log'})")
            return None
        say(f"dashboard at {self.dashboard_url} (sign in with {self.dir / 'data/operator.token'})")
        return proc.pid

    def _make_node(self, conn: Any, state: LabState, i: int, racks: int, shape: dict[str, Any], say: Any) -> None:
        rack_no = i % racks + 1
        uefi = _pick(shape["firmware"], rack_no, "bios", "uefi") == "uefi"
        node = LabNode(name=f"lab-r{rack_no}-n{i // racks + 1}", mac=f"{self.cfg.mac_prefix}:{rack_no:02x}:{i + 1:02x}",
                       rack=f"rack-{rack_no}", bmc_port=self.cfg.bmc_base_port + i, memory_mib=shape["memory_mib"],
                       vcpus=shape["vcpus"], disk_gib=shape["disk_gib"], uefi=uefi,
                       bmc_driver=_pick(shape["bmc"], rack_no, BmcDriver.IPMI, BmcDriver.REDFISH),
                       secure_boot=uefi and (shape["secure_boot"] == "on" or (
                           shape["secure_boot"] == "mixed" and (i // racks + 1) % 2 == 0)))
        disk = self.dir / "disks" / f"{node.name}.qcow2"
        hypervisor.create_disk(disk, node.disk_gib)
        xml = self._jinja.get_template("domain.xml.j2").render(
            name=node.name, memory_mib=node.memory_mib, vcpus=node.vcpus, uefi=uefi, disk=disk,
            secure_boot=node.secure_boot, secure_boot_code=SECURE_BOOT_CODE, secure_boot_vars=SECURE_BOOT_VARS,
            nvram=self.dir / "disks" / f"{node.name}_VARS.secboot.fd",
            disk_serial=f"LABDISK{i + 1:04d}", mac=node.mac, bridge=self.cfg.bridge,
            console_log=self.console_log(node.name), serial=f"LAB{i + 1:06d}")
        uuid = hypervisor.define(conn, xml)
        if node.bmc_driver == BmcDriver.REDFISH:
            node.system = f"/redfish/v1/Systems/{uuid}"
        self._add_node(state, node, say)

    def _add_node(self, state: LabState, node: LabNode, say: Any) -> None:
        """Record a defined domain and give it a virtual BMC. Recorded first: if the BMC
        fails, 'down' must still undefine the domain. Redfish nodes share the lab's one
        emulator (started once every node is defined) and its one password."""
        state.nodes.append(node)
        self.save(state)
        pw_file = self.password_file(node.name)
        if node.bmc_driver == BmcDriver.REDFISH:
            shared = self.password_file("redfish")
            if not shared.exists():
                shared.write_text(secrets.token_urlsafe(12) + "\n")
                os.chmod(shared, 0o600)
            shutil.copy2(shared, pw_file)
            say(f"node {node.name} {node.mac} {node.rack}, BMC {self.redfish.url}{node.system} (Redfish)")
            return
        password = secrets.token_urlsafe(12)
        pw_file.write_text(password + "\n")
        os.chmod(pw_file, 0o600)
        self.bmcs.add(node.name, node.bmc_port, self.cfg.bmc_user, password)
        say(f"node {node.name} {node.mac} {node.rack}, BMC 127.0.0.1:{node.bmc_port} (IPMI suite 3)")

    def password_file(self, name: str) -> Path:
        return self.dir / "passwords" / name

    def adopt(self, name: str, rack: str, progress: Any = None) -> LabNode:
        """Take in a domain someone else defined on the lab's network (Vagrant): power it off
        (a new machine waits for enrollment), give it a virtual BMC, add it to the inventory.
        Adopting a node twice changes nothing."""
        say = progress or (lambda msg: None)
        if not self.state_file.exists():
            raise LabError("the lab is not up: 'provisioner lab up --vagrant' first")
        # Vagrant brings its machines up in parallel, and so runs its triggers: one at a time
        # here, or two nodes would get the same BMC port and one would be lost from the state.
        with (self.dir / "adopt.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._adopt(name, rack, say)

    def _adopt(self, name: str, rack: str, say: Any) -> LabNode:
        state = self.load()
        if state is None:
            raise LabError("the lab is not up: 'provisioner lab up --vagrant' first")
        for known in state.nodes:
            if known.name == name:
                return known
        conn = self.libvirt.connect()
        try:
            facts = hypervisor.adoptable(conn, name, self.cfg.bridge, self.cfg.netns)
        finally:
            conn.close()
        node = LabNode(name=name, mac=facts["mac"], rack=rack,
                       bmc_port=self.cfg.bmc_base_port + len(state.nodes), memory_mib=facts["memory_mib"],
                       vcpus=facts["vcpus"], disk_gib=facts["disk_gib"], uefi=facts["uefi"])
        self._add_node(state, node, say)
        self._write_inventory(state)
        return node

    def _write_inventory(self, state: LabState) -> None:
        import yaml
        nodes = [{"name": n.name, "mac": n.mac, "rack": n.rack, "bmc": self._inventory_bmc(n)} for n in state.nodes]
        header = ("# The lab's machines, for 'provisioner enroll --from'. Their BMCs listen on the\n"
                  "# lab namespace's loopback, where the daemon runs. virtualbmc speaks IPMI\n"
                  "# cipher suite 3 only (see LAB.md), hence cipher_suite: 3; Redfish nodes are\n"
                  "# sushy-tools' emulator, over TLS with the lab's own CA.\n")
        self.inventory_file.write_text(header + yaml.safe_dump({"nodes": nodes}, sort_keys=False))

    def _inventory_bmc(self, node: LabNode) -> dict[str, Any]:
        common = {"username": self.cfg.bmc_user, "password_file": str(self.password_file(node.name))}
        if node.bmc_driver == BmcDriver.REDFISH:
            return {"driver": BmcDriver.REDFISH.value, "address": self.redfish.url, "system": node.system,
                    **common}
        return {"address": f"127.0.0.1:{node.bmc_port}", **common, "cipher_suite": 3}

    def config_file(self) -> Path:
        """The lab daemon's settings (templates/provisioner.toml.j2); TOML, so not escaped as XML."""
        path = self.dir / "provisioner.toml"
        toml = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                                  keep_trailing_newline=True)
        state = self.load()
        database_url = self.postgres.url() if state is not None and state.database == "postgresql" else ""
        path.write_text(toml.get_template("provisioner.toml.j2").render(
            cfg=self.cfg, dir=self.dir, guest_pool=self.guest_pool, database_url=database_url,
            redfish_ca=self.redfish.ca if self.redfish.ca.exists() else ""))
        return path

    def _start_daemon(self) -> int:
        with (self.dir / "logs/provisioner.log").open("ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                self.libvirt.inside([sys.executable, "-m", "provisioner", "--config", str(self.config_file()),
                                     "serve", *self._settings_flags()]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        client = self.client()

        def healthy() -> bool:
            if proc.poll() is not None:
                raise LabError(f"the lab daemon exited with {proc.returncode}: see "
                               f"{self.dir / 'logs/provisioner.log'}")
            try:
                client.get("/v1/health")
                return True
            except ProvisionerError:
                return False

        system.wait_for(healthy, 30, "the lab daemon to answer")
        return proc.pid

    def _settings_flags(self) -> list[str]:
        state = self.load()
        return [f for key, value in sorted((state.settings if state else {}).items())
                for f in ("--set", f"{key}={value}")]

    def stop_daemon(self) -> None:
        """Stop the daemon (and with it DHCP, TFTP and HTTP); restart_daemon starts it again."""
        state = self.load()
        if state is not None and state.daemon_pid and system.pid_alive(state.daemon_pid):
            system.stop_pids([state.daemon_pid])

    def restart_daemon(self) -> int:
        """Start the daemon again (after a crash or a kill -9), same config and data."""
        state = self.load()
        if state is None:
            raise LabError("the lab is not up")
        state.daemon_pid = self._start_daemon()
        self.save(state)
        return state.daemon_pid

    # -- status ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        state = self.load()
        if state is None:
            return {"up": False, "name": self.cfg.name}
        doc: dict[str, Any] = {"up": True, "name": self.cfg.name, "slot": self.cfg.slot, "namespace": self.cfg.netns,
                               "bridge": f"{self.cfg.bridge} {self.cfg.address}/{self.cfg.prefix}",
                               "inventory": str(self.inventory_file), "state_dir": str(self.dir),
                               "socket": str(self.cfg.socket), "libvirt": self.libvirt.uri,
                               "daemon_pid": state.daemon_pid, "database": state.database,
                               "dashboard": self.dashboard_url if state.forward_pid and
                               system.pid_alive(state.forward_pid) else None,
                               "daemon": "running" if state.daemon_pid and system.pid_alive(state.daemon_pid)
                               else "stopped",
                               "vbmcd": "running" if self.bmcs.pids() else "stopped", "nodes": []}
        try:
            conn = self.libvirt.connect() if self.libvirt.socket.exists() else None
        except LabError:
            conn = None
        for node in state.nodes:
            facts: dict[str, Any] = {"state": "unknown"}
            if conn is not None:
                try:
                    facts = hypervisor.domain_facts(conn, node.name)
                except LabError:
                    facts = {"state": "missing"}
            doc["nodes"].append({**asdict(node), "domain": facts["state"],
                                 "bmc": f"{self.redfish.url}{node.system}" if node.bmc_driver == BmcDriver.REDFISH
                                 else f"127.0.0.1:{node.bmc_port}",
                                 "console_log": str(self.console_log(node.name))})
        if conn is not None:
            conn.close()
        return doc

    # -- down -----------------------------------------------------------------
    def down(self) -> None:
        """Remove everything the lab made; safe to run on a half-built or absent lab. Its
        libvirtd is its own: its domains, networks and pools go with its directory."""
        state = self.load() or LabState()
        if state.forward_pid and system.pid_alive(state.forward_pid):
            system.stop_pids([state.forward_pid])
        self.stop_daemon()
        self.postgres.stop()  # after the daemon; nothing if it never ran
        self.bmcs.stop()
        self.redfish.stop()
        system.stop_pids(system.netns_pids(self.cfg.netns))  # libvirtd, virtlogd, qemu, sshd, ...
        if system.netns_exists(self.cfg.netns):
            system.run(["ip", "netns", "del", self.cfg.netns], check=False)
        self.cfg.socket.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty or not there: not ours to remove
            self.cfg.socket.parent.rmdir()  # the daemon made it for its socket
        shutil.rmtree(self.dir, ignore_errors=True)


def every_lab() -> list[Lab]:
    """Each lab this machine has (up, or left half up by a killed `lab up`)."""
    return [Lab(name) for name in instances.names()]
