"""The daemon's collaborators, built once from the settings and injected everywhere."""

from __future__ import annotations

import logging
import os
import secrets as pysecrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .boot.counters import Counters
from .boot.dhcp import DhcpService
from .boot.render import Renderer
from .config import Settings
from .images import Catalog
from .network.haproxy import Haproxy
from .network.names import NameService, Record
from .power import PowerDriver, PowerManager, make_driver
from .secrets import SecretBox
from .sshkeys import operator_key
from .store import Store
from .telemetry import Metrics
from .telemetry.fleet import FleetCollector
from .statuses import GUEST_JOBS
from .workflows.controllers import ControllerRole
from .workflows.heartbeats import Heartbeats
from .workflows.agent import AgentService
from .workflows.deploy import DeployFlow
from .workflows.engine import Conductor
from .workflows.endpoints import EndpointService
from .workflows.enroll import EnrollService
from .workflows.guests import GuestService
from .workflows.hosthealth import HostWatch
from .workflows.hostmoves import HostMoves
from .workflows.inspect import InspectionFlow
from .workflows.jobs import JobRunner
from .workflows.multicast import MulticastService
from .workflows.netboot import NetbootService
from .workflows.power import PowerService

LOG = logging.getLogger(__name__)


def _operator_token(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = pysecrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def endpoint_health(endpoints: EndpointService) -> list[tuple[tuple[str, ...], int]]:
    """(endpoint, health) -> members, for the metrics."""
    counts: dict[tuple[str, ...], int] = {}
    for e in endpoints.listing():
        for m in e["members"]:
            key = (f"{e['name']}:{e['port']}", str(m["health"]))
            counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items())


@dataclass
class Services:
    settings: Settings
    store: Store
    box: SecretBox
    conductor: Conductor
    inspection: InspectionFlow
    enroll: EnrollService
    agents: AgentService
    netboot: NetbootService
    power: PowerService
    counters: Counters
    renderer: Renderer
    dhcp: DhcpService | None
    operator_token: str
    catalog: Catalog
    deploy: DeployFlow
    jobs: JobRunner
    guests: GuestService
    multicast: MulticastService
    endpoints: EndpointService
    watch: HostWatch
    heartbeats: Heartbeats
    served_nodes: Callable[[], list[tuple[int, str, str]]]
    controller: ControllerRole

    @classmethod
    def build(cls, settings: Settings, driver: PowerDriver | None = None) -> "Services":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.data_dir, 0o700)
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        store = Store(settings.database)
        operator_key(settings.data_dir)  # made once at start, never by a request (two at once raced)
        box = SecretBox(settings.secret_file)
        power = PowerManager(driver or make_driver(settings), min_interval=settings.power_min_interval,
                             retries=settings.power_retries, backoff=settings.power_backoff,
                             verify_timeout=settings.power_verify_timeout)
        metrics = Metrics()
        power.observe = metrics.bmc_command
        store.on_move = metrics.moved
        conductor = Conductor(settings, store, power, box, metrics=metrics)
        renderer = Renderer()
        counters = Counters()
        dhcp = DhcpService(settings, renderer, counters, on_unknown_mac=store.record_discovered) \
            if settings.dhcp_enabled else None
        inspection = InspectionFlow(conductor)

        def names() -> list[list[Record]]:
            nodes = store.list_nodes()
            fixed = dhcp.addresses((n.id, n.mac, n.name) for n in nodes) if dhcp is not None else {}
            return [[(n.name, (n.facts.address if n.facts else None) or fixed.get(n.name, "")) for n in nodes],
                    [(h["name"], h["address"]) for h in store.registered_hosts()],
                    [(g["name"], g["address"]) for g in store.guests()],
                    [(e["name"], e["vip"]) for e in store.endpoints()]]

        name_service = NameService(settings.dns_domain, dhcp.names_file, names, dhcp.hup) \
            if dhcp is not None and settings.dns_domain else None
        endpoints = EndpointService(settings, store, Haproxy(settings.data_dir / "haproxy", settings.endpoints_haproxy),
                                    name_service)

        def served_nodes() -> list[tuple[int, str, str]]:
            """The nodes this controller's DHCP answers: those of the racks it serves."""
            nodes = store.node_addresses()
            controller.knows({rack for *_, rack in nodes})  # a node enrolled in a new rack: claim it first
            return [(node_id, mac, name) for node_id, mac, name, rack in nodes if conductor.holds(rack)]

        def nodes_changed() -> None:
            # One SIGHUP for both of dnsmasq's files: it reads them together, and each
            # reload is a chance for dnsmasq 2.90 to crash (seen in the lab; it is
            # restarted, but DHCP and DNS are away for a second).
            if dhcp is not None:
                dhcp.write_hosts(served_nodes())
            if not endpoints.changed() and dhcp is not None:
                dhcp.hup()

        def peers() -> list[tuple[str, str]]:
            return [(c["name"], c["address"]) for c in store.controllers()
                    if c["alive"] and c["address"] and c["name"] != settings.controller]

        metrics.add(FleetCollector(
            lambda: {"nodes": store.tally_nodes(), "lost": store.tally_lost_hosts(), "jobs": store.tally_jobs(),
                     "members": store.tally_job_members(), "guests": store.tally_guests()},
            counters.snapshot, lambda: dhcp.restarts if dhcp is not None else 0, lambda: endpoint_health(endpoints)))
        catalog = Catalog(settings.data_dir / "images", store, peer_token=box.derive("controller-peer"), peers=peers)
        multicast = MulticastService(settings, store, catalog, counters)
        deploy = DeployFlow(conductor, catalog, multicast)
        heartbeats = Heartbeats(conductor)
        agents = AgentService(conductor, deploy, heartbeats)
        guests = GuestService(settings, store, catalog, endpoints)
        jobs = JobRunner(conductor, deploy, catalog, multicast)
        jobs.moves, jobs.guest_jobs = HostMoves(settings, store, guests), guests.jobs
        controller = ControllerRole(settings, store, conductor, on_racks_changed=nodes_changed)
        controller.running_jobs = lambda: jobs.running() | guests.jobs.running()
        controller.run_job = lambda job_id, kind: guests.jobs.start(job_id) if kind in GUEST_JOBS \
            else jobs.take_up(job_id)
        svc = cls(settings=settings, store=store, box=box, conductor=conductor, inspection=inspection,
                  enroll=EnrollService(conductor, inspection, nodes_changed),
                  agents=agents, netboot=NetbootService(conductor, renderer.render),
                  power=PowerService(conductor), counters=counters, renderer=renderer, dhcp=dhcp,
                  operator_token=_operator_token(settings.operator_token_file),
                  catalog=catalog, deploy=deploy, jobs=jobs, guests=guests, multicast=multicast, endpoints=endpoints,
                  watch=HostWatch(conductor, guests, endpoints), heartbeats=heartbeats,
                  controller=controller, served_nodes=served_nodes)
        return svc
