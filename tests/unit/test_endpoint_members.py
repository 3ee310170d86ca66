"""A guest's way out of and back into its endpoint, with a fake load balancer: drain
waits for open connections, admission waits for the guest's own health check, and the
config the balancer is given follows the database (swap included)."""

from pathlib import Path

import pytest

from provisioner import config
from provisioner.errors import HostError
from provisioner.network.haproxy import AdminState, Health, Listener, ServerStat
from provisioner.store import Store
from provisioner.workflows.endpoints import EndpointService
from tests.unit.stores import new_store

NET = {"network.subnet": "10.99.0.0/24", "network.guest_range": "10.99.0.20-10.99.0.29",
       "network.endpoint_range": "10.99.0.60-10.99.0.61", "dhcp.interface": "br0",
       "endpoints.drain_timeout": "5", "endpoints.admit_timeout": "3"}


class FakeBalancer:
    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self.states: list[tuple[str, str, AdminState]] = []
        self.sessions: dict[str, list[int]] = {}  # server -> open sessions, one value per stats() call

    def apply(self, listeners: list[Listener]) -> bool:
        self.listeners = listeners
        return True

    def set_state(self, proxy: str, server: str, state: AdminState) -> None:
        self.states.append((proxy, server, state))

    def _open(self, server: str) -> int:
        queue = self.sessions.get(server) or [0]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def stats(self) -> list[ServerStat]:
        return [ServerStat(listener.proxy, s.name, Health.UP, "L7OK", self._open(s.name), 0)
                for listener in self.listeners for s in listener.servers]

    def master_pid(self) -> int | None:
        return None

    def supervise(self, interval: float = 1.0) -> None:
        pass

    def stop_supervising(self) -> None:
        pass

    def stop(self) -> None:
        pass


class FakeVips:
    def __init__(self) -> None:
        self.held: set[str] = set()

    def add(self, wanted: set[str]) -> None:
        self.held |= wanted

    def drop_others(self, wanted: set[str]) -> None:
        self.held &= wanted


@pytest.fixture
def setup(tmp_path: Path):
    settings = config.load(overrides={"server.data_dir": str(tmp_path), **NET}, environ={})
    store = new_store()
    checks: list[bool] = []
    clock = [0.0]
    balancer, addresses = FakeBalancer(), FakeVips()
    svc = EndpointService(settings, store, balancer, None, check=lambda address, endpoint: checks.pop(0),
                          sleep=lambda s: clock.__setitem__(0, clock[0] + s), addresses=addresses,
                          clock=lambda: clock[0])
    store.add_host(name="h1", address="192.0.2.1", port=22, rack="rack-1", host_key="k", cores=4, memory_mib=4096,
                   bridge="br0")
    ports = [{"port": 80, "protocol": "http", "guest_port": 80, "check": "/health", "interval": 1.0}]
    store.replace_endpoints([{"name": "web", "role": "web", "vip": "10.99.0.60", "ports": ports},
                             {"name": "web-staging", "role": "web-staging", "vip": "10.99.0.61", "ports": ports}])
    entries = [{"guest": name, "action": "add", "batch": 1, "host": "h1",
                "spec": {"guest": {"name": name, "role": role, "index": 1, "host": "h1", "cores": [i],
                                   "memory_mib": 128, "upgrade_domain": 0},
                         "network": {"address": f"10.99.0.2{i}", "mac": f"52:54:0a:63:00:1{i}"}}}
               for i, (name, role) in enumerate((("web-1", "web"), ("web-staging-1", "web-staging")))]
    store.create_deploy_job("roles.yaml", {}, entries)
    return svc, store, balancer, addresses, checks


def test_a_new_guest_is_in_the_config_but_out_until_its_check_passes(setup):
    svc, store, balancer, addresses, checks = setup
    svc.sync()
    assert addresses.held == {"10.99.0.60", "10.99.0.61"}
    web = next(l for l in balancer.listeners if l.proxy == "web-80")
    assert [(s.name, s.address, s.enabled) for s in web.servers] == [("web-1", "10.99.0.20", False)]
    checks.extend([False, False, True])
    svc.admit("web-1")
    assert checks == [] and store.guest("web-1")["serving"] == 1
    assert balancer.states[-1] == ("web-80", "web-1", AdminState.READY)
    assert next(l for l in balancer.listeners if l.proxy == "web-80").servers[0].enabled


def test_admission_gives_up_when_the_check_never_passes(setup):
    svc, store, balancer, _, checks = setup
    checks.extend([False] * 100)
    with pytest.raises(HostError, match=r"guest web-1: its health check \(http 10.99.0.20:80/health\) did not pass"):
        svc.admit("web-1")
    assert store.guest("web-1")["serving"] == 0 and balancer.states == []


def test_drain_waits_for_open_connections_then_takes_the_guest_out(setup):
    svc, store, balancer, _, checks = setup
    checks.append(True)
    svc.admit("web-1")
    balancer.states.clear()
    balancer.sessions["web-1"] = [3, 1, 0]
    svc.drain("web-1")
    assert [s for _, _, s in balancer.states] == [AdminState.DRAIN, AdminState.MAINT]
    assert balancer.sessions["web-1"] == [0], "it waited until none was open"
    assert store.guest("web-1")["serving"] == 0
    balancer.states.clear()
    svc.drain("web-1")
    assert balancer.states == [], "a guest already out is left alone"


def test_swap_gives_each_vip_the_other_roles_guests(setup):
    svc, store, balancer, _, checks = setup
    svc.swap("web", "web-staging", dry_run=False)
    servers = {l.proxy: [s.name for s in l.servers] for l in balancer.listeners}
    assert servers == {"web-80": ["web-staging-1"], "web-staging-80": ["web-1"]}
    assert {l.proxy: l.vip for l in balancer.listeners} == {"web-80": "10.99.0.60", "web-staging-80": "10.99.0.61"}
