"""Multicast for a batch: one image sent once to the nodes of a reimage batch that need
it. The job runner opens a session per batch; the first agent offered it starts the
sender (boot/udpcast.py), sized for the nodes expected; agents that ask while receivers
may still join get the offer in their deploy command, later ones get none and use
HTTP. Whatever a receiver misses, it fetches over HTTP with range requests, and verifies
the sha256 before anything boots from the image. The runner closes the session when the
batch has ended: the sender is stopped if it still runs, and its report kept with the job.
A session nobody could join (no IGMP, a router between) turns multicast off for the rest
of the job, said once."""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..boot.counters import Counters
from ..agent.protocol import DeployMulticast
from ..boot.udpcast import (Sender, SenderOptions, SenderReport, SenderState, SessionAddress, sender_command,
                            stale_senders)
from ..config import Settings, parse_group, parse_ports
from ..errors import NotFound
from ..images import Catalog, Image
from ..models import Node
from ..processes import stop_pids
from ..store import Store

LOG = logging.getLogger(__name__)


def interface_networks(interface: str) -> list[ipaddress.IPv4Network]:
    """The IPv4 networks an interface is on (from iproute2's JSON)."""
    try:
        out = subprocess.run(["ip", "-j", "-4", "addr", "show", "dev", interface], capture_output=True,
                             text=True, timeout=10, check=True).stdout
        links = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    return [ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False)
            for link in links for a in link.get("addr_info", []) if a.get("family") == "inet"]


@dataclass
class BatchSession:
    job_id: int
    batch: int
    image: Image
    expected: set[int]  # nodes that need the image
    address: SessionAddress
    slot: int
    sender: Sender | None = None
    offered: set[int] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)  # of the agents offered the session

    @property
    def name(self) -> str:
        return f"job{self.job_id}-batch{self.batch + 1}"

    def stats(self) -> dict[str, Any]:
        report = self.sender.report if self.sender else SenderReport()
        return {"batch": self.batch + 1, "group": self.address.data, "portbase": self.address.portbase,
                "expected": len(self.expected), "offered": len(self.offered), "joined": len(report.joined),
                "dropped": report.dropped, "state": report.state if self.sender else "unused",
                # the whole image went out (udp-sender also ends "complete" once it has
                # dropped its last receiver)
                "complete": report.state == SenderState.DONE and report.payload_bytes == self.image.size,
                "payload_bytes": report.payload_bytes, "retransmitted_bytes": report.retransmitted_bytes,
                "sent_bytes": report.sent_bytes, "image_bytes": self.image.size, "error": report.error,
                "sending_s": report.sending_seconds,
                # receivers nobody offered the session to: someone else on the provisioning
                # network joined it (it may receive the image, and slow the session down)
                "strangers": sorted(set(report.joined) - self.addresses)}


class MulticastService:
    def __init__(self, settings: Settings, store: Store, catalog: Catalog, counters: Counters | None = None) -> None:
        self.settings = settings
        self.counters = counters or Counters()
        self.store = store
        self.catalog = catalog
        self.run_dir = settings.data_dir / "run"
        self._group = parse_group(settings.multicast_group)
        self._ports = parse_ports(settings.multicast_ports)
        self._slots = min(len(self._ports), (self._group.num_addresses - 2) // 2)
        self._lock = threading.Lock()
        self._sessions: dict[tuple[int, int], BatchSession] = {}
        self._by_node: dict[int, BatchSession] = {}
        self._off: dict[int, str] = {}  # job -> why multicast is off for the rest of it
        self._interface: str | None = None
        self._networks: list[ipaddress.IPv4Network] = []
        # Senders are started from this one long-lived thread: a child's death signal
        # (setpriv --pdeathsig) follows the thread that started it, and a request's
        # thread may end long before the session.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="multicast")

    # -- the daemon's life ------------------------------------------------------
    def start(self) -> None:
        """Stop senders a killed daemon left running; find the interface to send on."""
        stale = stale_senders(self.run_dir, self.settings.multicast_sender)
        if stale:
            LOG.warning("multicast: stopping %d udp-sender(s) a previous daemon left running", len(stale))
            stop_pids(stale, grace=3.0)
        if self.settings.multicast_enabled:
            self._interface, self._networks = self._find_interface()

    def stop(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            if session.sender is not None:
                session.sender.stop()
        self._spawner.shutdown(wait=False)

    def _find_interface(self) -> tuple[str | None, list[ipaddress.IPv4Network]]:
        s = self.settings
        wanted = [ipaddress.IPv4Network(n.strip(), strict=False) for n in s.multicast_networks.split(",")
                  if n.strip()]
        first = ipaddress.IPv4Address(s.dhcp_range.split(",")[0].strip())
        named = s.multicast_interface or s.dhcp_interface
        for name in [named] if named else sorted(p.name for p in Path("/sys/class/net").iterdir()):
            nets = interface_networks(name)
            if nets and (named or any(first in n for n in nets)):
                return name, wanted or nets
        LOG.warning("multicast: no interface on the provisioning network (%s); images go over HTTP",
                    s.multicast_interface or s.dhcp_interface or f"none holds {first}")
        return None, []

    # -- the job runner's side --------------------------------------------------
    def open_batch(self, job_id: int, batch: int, image: Image, nodes: list[Node]) -> str:
        """A session for the batch's nodes that need the image; what was decided, for the
        job ("" when the job was already told why it has no multicast)."""
        need = [n for n in nodes if image.sha256 not in (n.image_sha256, n.previous_image_sha256)]
        if not self.settings.multicast_enabled:
            return self._once(job_id, "multicast is off (multicast.enabled): HTTP")
        if self._interface is None:
            return self._once(job_id, "multicast: no interface on the provisioning network: HTTP")
        if job_id in self._off:
            return ""  # said when it was turned off
        if len(need) < max(2, self.settings.multicast_min_receivers):
            return f"{len(need)} node(s) of the batch need the image (multicast from " \
                   f"{max(2, self.settings.multicast_min_receivers)}): HTTP"
        with self._lock:
            used = {s.slot for s in self._sessions.values()}
            free = [i for i in range(self._slots) if i not in used]
            if not free:
                return "every multicast group and port of multicast.group/multicast.ports is in use: HTTP"
            slot = free[0]
            address = SessionAddress(rendezvous=str(self._group[2 * slot + 1]), data=str(self._group[2 * slot + 2]),
                                     portbase=self._ports[slot])
            session = BatchSession(job_id, batch, image, {n.id for n in need}, address, slot)
            self._sessions[(job_id, batch)] = session
            for n in need:
                self._by_node[n.id] = session
        return f"multicast session {address.data}:{address.portbase} for {len(need)} node(s)"

    def _once(self, job_id: int, why: str) -> str:
        with self._lock:
            if job_id in self._off:
                return ""
            self._off[job_id] = why
        return why

    def close_batch(self, job_id: int, batch: int) -> dict[str, Any] | None:
        """End the batch's session (the sender stopped if it still runs); its report."""
        with self._lock:
            session = self._sessions.pop((job_id, batch), None)
            if session is None:
                return None
            for node_id in session.expected:
                if self._by_node.get(node_id) is session:
                    del self._by_node[node_id]
        if session.sender is not None:
            session.sender.stop()
        stats = session.stats()
        self.counters.add("multicast_bytes_sent", int(stats["sent_bytes"] or 0))
        if stats["strangers"]:
            LOG.warning("multicast %s: joined by %s, which no deploy was offered", session.name,
                        ", ".join(stats["strangers"]))
            stats["note"] = (f"multicast session of batch {batch + 1} was joined by {', '.join(stats['strangers'])}, "
                             "not a node of the batch")
        if session.offered and session.sender is not None and not session.sender.report.joined:
            why = (f"multicast did not work on {self._interface}: no receiver reached the sender "
                   f"(no IGMP, or a router between?); HTTP for the rest of job {job_id}")
            self._off[job_id] = why
            stats["note"] = why
            LOG.warning("%s", why)
        return stats

    def live(self, job_id: int) -> list[dict[str, Any]]:
        """The job's sessions still open, as their senders report them now."""
        with self._lock:
            sessions = [s for (job, _), s in sorted(self._sessions.items()) if job == job_id]
        return [s.stats() for s in sessions]

    # -- the deploy flow's side -------------------------------------------------
    def offer(self, node: Node, address: str) -> tuple[DeployMulticast | None, str | None]:
        """The multicast offer for a node's deploy command, and what to note on the node."""
        with self._lock:
            session = self._by_node.get(node.id)
        if session is None or node.deploy_sha256 != session.image.sha256:
            return None, None
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            return None, f"multicast: agent address {address!r} unknown: HTTP"
        if not any(ip in net for net in self._networks):
            return None, f"multicast: {ip} is not on a multicast network of {self._interface}: HTTP"
        with self._lock:
            if session.sender is None:
                try:
                    session.sender = self._start_sender(session)
                except NotFound as exc:  # the image is on no controller that answers
                    return None, f"multicast: {exc}: HTTP"
            report = session.sender.report
            if report.state != SenderState.WAITING:
                return None, (f"multicast session {session.address.data} already {report.state}: "
                              "late for it, HTTP")
            session.offered.add(node.id)
            session.addresses.add(str(ip))
        s = self.settings
        offer: DeployMulticast = {
            "session": session.name, "rendezvous": session.address.rendezvous,
            "portbase": session.address.portbase,
            "start_timeout": s.multicast_max_wait + 30.0, "receive_timeout": s.multicast_receive_timeout}
        return offer, (f"multicast: joins session {session.address.data}:{session.address.portbase} "
                       f"({len(session.expected)} expected)")

    def _start_sender(self, session: BatchSession) -> Sender:
        s = self.settings
        assert self._interface is not None
        opts = SenderOptions(interface=self._interface, ttl=s.multicast_ttl, min_receivers=len(session.expected),
                             max_wait=s.multicast_max_wait, max_bitrate=s.multicast_max_bitrate,
                             start_timeout=s.multicast_max_wait + 60.0)
        image_path = self.catalog.local(session.image.sha256)
        sender = Sender(session.name, sender_command(s.multicast_sender, image_path, session.address, opts),
                        self.run_dir, s.log_dir / f"udp-sender-{session.name}.log",
                        on_change=lambda snd: LOG.info("multicast %s: %s, %d joined, %d bytes", snd.name,
                                                       snd.report.state, len(snd.report.joined),
                                                       snd.report.payload_bytes))
        self._spawner.submit(sender.start).result()
        LOG.info("multicast %s: udp-sender for %s on %s, %d receivers expected", session.name,
                 session.image.ref, self._interface, len(session.expected))
        return sender
