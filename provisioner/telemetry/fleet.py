"""The fleet as the database holds it, read at each scrape: nodes by rack and state, jobs
and their members, guests by role and state, lost hosts; role endpoints' members by
health (the load balancer's checks); and the boot servers' counters (DHCP, TFTP, boot
files over HTTP) with the DHCP child's restarts."""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..store.tallies import Tally


class FleetCollector(Collector):
    def __init__(self, tallies: Callable[[], dict[str, Tally]], counters: Callable[[], dict[str, int]],
                 dhcp_restarts: Callable[[], int], members: Callable[[], Tally] = lambda: []) -> None:
        self._tallies = tallies
        self._counters = counters
        self._dhcp_restarts = dhcp_restarts
        self._members = members

    def describe(self) -> list[Metric]:
        return []  # read at scrape only: registering must not query the database

    def collect(self) -> Iterator[Metric]:
        t, counts = self._tallies(), self._counters()
        for name, text, labels, key in (
                ("provisioner_nodes", "Nodes by rack and state", ["rack", "state"], "nodes"),
                ("provisioner_hosts_lost_now", "Active hosts whose host agent is silent, by rack", ["rack"], "lost"),
                ("provisioner_jobs", "Jobs by kind and status", ["kind", "status"], "jobs"),
                ("provisioner_job_members", "Nodes and guests of jobs, by their status in the job",
                 ["member", "kind", "status"], "members"),
                ("provisioner_guests", "Guests by role and state", ["role", "state"], "guests")):
            family = GaugeMetricFamily(name, text, labels=labels)
            for values, count in t[key]:
                family.add_metric(list(values), count)
            yield family
        boot = CounterMetricFamily("provisioner_boot_requests", "What the boot servers answered: DHCP "
                                   "messages, TFTP and HTTP boot files", labels=["server", "what"])
        for key, value in sorted(counts.items()):
            server, sep, what = key.partition(":")
            if sep and server in ("dhcp", "tftp", "http"):
                boot.add_metric([server, what], value)
        yield boot
        sent = CounterMetricFamily("provisioner_boot_bytes", "Bytes of boot files sent (TFTP loaders and "
                                   "scripts, the maintenance image over HTTP)", labels=["server"])
        for server in ("tftp", "http"):
            sent.add_metric([server], counts.get(f"bytes:{server}", 0))
        yield sent
        images = CounterMetricFamily("provisioner_image_bytes_served", "Image bytes sent to nodes: over HTTP "
                                     "(unicast) and by udp-sender (multicast, retransmissions included)",
                                     labels=["path"])
        images.add_metric(["unicast"], counts.get("image_bytes_served", 0))
        images.add_metric(["multicast"], counts.get("multicast_bytes_sent", 0))
        yield images
        health = GaugeMetricFamily("provisioner_endpoint_members", "Role endpoints' members by health, as the "
                                   "load balancer's checks see them", labels=["endpoint", "health"])
        for values, count in self._members():
            health.add_metric(list(values), count)
        yield health
        yield CounterMetricFamily("provisioner_dhcp_restarts", "Times the DHCP child (dnsmasq) was restarted",
                                  value=self._dhcp_restarts())
