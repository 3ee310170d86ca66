"""Role endpoints and names, kept in step with the database: the VIPs on their interface,
HAProxy's config (reloaded when it changes), and the DNS names. Guests leave their
endpoint before anything touches them (drain: no new connections, open ones finish or
time out) and rejoin only once their own health check passes (admit)."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from ..config import Settings
from ..errors import HostError, InvalidInput, NotFound, ProvisionerError
from ..guests.roles import Endpoint, Protocol
from ..network import vips
from ..network.endpoints import Slot, swap
from ..network.haproxy import AdminState, Balancer, Health, Listener, Server
from ..network.names import NameService
from ..store import Store

LOG = logging.getLogger(__name__)
Probe = Callable[[str, Endpoint], bool]


def probe(address: str, endpoint: Endpoint) -> bool:
    """The health check HAProxy makes, made once from here: a GET of the check path
    answered 2xx (http), or a connection accepted (tcp)."""
    try:
        if endpoint.protocol == Protocol.TCP:
            with socket.create_connection((address, endpoint.target), timeout=2):
                return True
        with urllib.request.urlopen(f"http://{address}:{endpoint.target}{endpoint.check}", timeout=2) as reply:
            return 200 <= int(reply.status) < 300
    except (OSError, urllib.error.URLError, ValueError):
        return False


def proxy_name(slot: Slot, endpoint: Endpoint) -> str:
    return f"{slot.name}-{endpoint.port}"


class EndpointService:
    def __init__(self, settings: Settings, store: Store, balancer: Balancer | None, names: NameService | None,
                 check: Probe = probe, sleep: Callable[[float], None] = time.sleep,
                 addresses: vips.Vips | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.store = store
        self.network = settings.guest_network
        self._haproxy = balancer
        self.balancer = balancer if self.network is not None and self.network.endpoints is not None else None
        self.names = names
        self.check = check
        self.sleep = sleep
        self.clock = clock
        interface = settings.network_interface or settings.dhcp_interface
        self.vips = addresses or (vips.Vips(interface, self.network.endpoints)
                                  if self.network is not None and self.network.endpoints is not None else None)
        self._lock = threading.RLock()

    # -- keeping in step ----------------------------------------------------------
    def start(self) -> None:
        if self.balancer is None and self._haproxy is not None and self._haproxy.master_pid() is not None:
            LOG.warning("endpoints: no endpoint range is set any more: stopping the HAProxy a previous daemon ran")
            self._haproxy.stop()
        self.sync()
        if self.balancer is not None:
            self.balancer.supervise()

    def stop(self) -> None:
        """The endpoints outlive the daemon: HAProxy and the VIPs stay (a restart, an
        upgrade or a crash of the controller drops no request), and the next daemon takes
        them over."""
        if self.balancer is not None:
            self.balancer.stop_supervising()
            LOG.info("endpoints: HAProxy left serving (master pid %s) for the next daemon to take over",
                     self.balancer.master_pid())

    def slots(self) -> list[Slot]:
        return [Slot.from_row(r) for r in self.store.endpoints()]

    def listeners(self) -> list[Listener]:
        out = []
        for slot in self.slots():
            guests = [g for g in self.store.guests(role=slot.role) if g.get("address")]
            for endpoint in slot.ports:
                servers = tuple(Server(g["name"], g["address"], endpoint.target, bool(g["serving"])) for g in guests)
                out.append(Listener(proxy_name(slot, endpoint), slot.vip, endpoint.port, endpoint, servers))
        return out

    def sync(self) -> bool:
        """VIPs, HAProxy and names as the database says; True when the names changed (and
        dnsmasq was told to read them, and its other files, again)."""
        with self._lock:
            if self.balancer is not None and self.vips is not None:
                wanted = {s.vip for s in self.slots()}
                self.vips.add(wanted)
                self.balancer.apply(self.listeners())
                self.vips.drop_others(wanted)
            return self.names.refresh() if self.names is not None else False

    def changed(self) -> bool:
        """After guests, hosts or nodes changed: a failure here is logged, not raised (the
        change itself is done; the next sync catches up). True when the names changed."""
        try:
            return self.sync()
        except ProvisionerError as exc:
            LOG.error("endpoints: could not follow a change: %s", exc)
            return False

    # -- one guest ------------------------------------------------------------------
    def _slot_of(self, role: str) -> Slot | None:
        return next((s for s in self.slots() if s.role == role), None)

    def drain(self, name: str, wait: bool = True) -> None:
        """Take a guest out of its endpoint and wait for its open connections to finish
        (at most endpoints.drain_timeout; not at all with wait=False: its host is dead).
        Nothing to do for a guest not in one."""
        guest = self._guest(name)
        if guest is None or not guest["serving"]:
            return
        self.store.set_guest(name, serving=0)
        slot = self._slot_of(guest["role"])
        if slot is None or self.balancer is None:
            return
        proxies = [proxy_name(slot, e) for e in slot.ports]
        started = self.clock()
        try:
            with self._lock:
                for proxy in proxies:
                    self.balancer.set_state(proxy, name, AdminState.DRAIN)
            while wait and self.clock() - started < self.settings.endpoints_drain_timeout:
                open_now = sum(s.sessions for s in self.balancer.stats() if s.server == name and s.proxy in proxies)
                if open_now == 0:
                    break
                self.sleep(0.2)
            else:
                LOG.warning("guest %s: connections still open after %.0fs of draining; taken out anyway", name,
                            self.settings.endpoints_drain_timeout)
            with self._lock:
                for proxy in proxies:
                    self.balancer.set_state(proxy, name, AdminState.MAINT)
        except ProvisionerError as exc:
            # HAProxy not answering (restarting): the config written from the database says
            # the guest is out, and HAProxy starts from it.
            LOG.warning("guest %s: %s; taking it out through the config instead", name, exc)
            self.sync()
        LOG.info("guest %s: out of endpoint %s after %.1fs of draining", name, slot.name, self.clock() - started)

    def admit(self, name: str) -> float:
        """Put a started guest into its endpoint once its health check passes; the seconds
        that took. HostError when it does not pass within endpoints.admit_timeout."""
        guest = self._guest(name)
        slot = self._slot_of(guest["role"]) if guest else None
        if guest is None or slot is None or self.balancer is None or not guest.get("address"):
            return 0.0
        started = self.clock()
        for endpoint in slot.ports:
            while not self.check(guest["address"], endpoint):
                if self.clock() - started > self.settings.endpoints_admit_timeout:
                    raise HostError(f"guest {name}: its health check ({endpoint.protocol} {guest['address']}:"
                                    f"{endpoint.target}{endpoint.check if endpoint.protocol == Protocol.HTTP else ''})"
                                    f" did not pass within {self.settings.endpoints_admit_timeout:.0f}s")
                self.sleep(0.5)
        self.store.set_guest(name, serving=1)
        with self._lock:
            self.sync()  # a guest new to its endpoint is in the config from now on
            for endpoint in slot.ports:
                self.balancer.set_state(proxy_name(slot, endpoint), name, AdminState.READY)
        took = self.clock() - started
        LOG.info("guest %s: in endpoint %s (health check passed after %.1fs)", name, slot.name, took)
        return took

    def health(self, guests: list[dict[str, Any]]) -> list[Health]:
        """What the load balancer's checks say of these guests, for those in an endpoint:
        DOWN when every check of one fails, UP otherwise (empty when nothing is checked,
        or HAProxy does not answer)."""
        if self.balancer is None:
            return []
        try:
            stats = self.balancer.stats()
        except ProvisionerError as exc:
            LOG.warning("endpoints: %s", exc)
            return []
        out = []
        for g in guests:
            seen = [s.health for s in stats if s.server == g["name"]] if g.get("serving") else []
            if seen:
                out.append(Health.DOWN if all(h == Health.DOWN for h in seen) else Health.UP)
        return out

    def _guest(self, name: str) -> dict[str, Any] | None:
        try:
            return self.store.guest(name)
        except NotFound:
            return None

    # -- what the operator sees and does ------------------------------------------
    def listing(self) -> list[dict[str, Any]]:
        stats: dict[tuple[str, str], Any] = {}
        if self.balancer is not None:
            try:
                stats = {(s.proxy, s.server): s for s in self.balancer.stats()}
            except ProvisionerError as exc:
                LOG.warning("endpoints: %s", exc)
        domain = self.settings.dns_domain
        out = []
        for slot in self.slots():
            guests = [g for g in self.store.guests(role=slot.role) if g.get("address")]
            for endpoint in slot.ports:
                proxy = proxy_name(slot, endpoint)
                members = []
                for g in guests:
                    stat = stats.get((proxy, g["name"]))
                    members.append({"guest": g["name"], "address": g["address"], "port": endpoint.target,
                                    "serving": bool(g["serving"]),
                                    "health": str(stat.health if stat else Health.UNKNOWN),
                                    "check": stat.check if stat else "", "sessions": stat.sessions if stat else 0})
                out.append({"name": slot.name, "role": slot.role, "vip": slot.vip, "port": endpoint.port,
                            "protocol": str(endpoint.protocol), "check": endpoint.check,
                            "interval": endpoint.interval,
                            "dns": f"{slot.name}.{domain}" if domain else None, "members": members})
        return out

    def membership(self, guest: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"endpoint": e["name"], "vip": e["vip"], "port": e["port"], "health": m["health"],
                 "serving": m["serving"]}
                for e in self.listing() for m in e["members"] if m["guest"] == guest["name"]]

    def swap(self, a: str, b: str, dry_run: bool) -> dict[str, Any]:
        with self._lock:
            before = {s.role: s for s in self.slots()}
            after = swap(list(before.values()), a, b)
            doc = {"dry_run": dry_run, "endpoints": [
                {"name": s.name, "vip": s.vip, "ports": [p.port for p in s.ports], "role_before": before[r].role,
                 "role_after": s.role, "dns": f"{s.name}.{self.settings.dns_domain}" if self.settings.dns_domain
                 else None} for s, r in ((after[0], a), (after[1], b))]}
            if dry_run:
                return doc
            if self.balancer is None:
                raise InvalidInput("no load balancer is running: endpoints need network.endpoint_range")
            self.store.swap_endpoints(a, b)
            self.sync()
        LOG.info("endpoints: swapped %s and %s (%s now serves %s; %s serves %s)", a, b, after[0].name, after[0].role,
                 after[1].name, after[1].role)
        return doc
