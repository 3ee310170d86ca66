"""The metrics: what the work reports, and the fleet as the database holds it, in the
text Prometheus scrapes (parsed back with prometheus_client's own parser)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from provisioner.boot.counters import Counters
from provisioner.errors import BmcUnreachable
from provisioner.models import BmcCredentials, BmcDriver, PowerState
from provisioner.power import PowerManager
from provisioner.secrets import Secret
from provisioner.states import Event, Step
from provisioner.statuses import JobKind
from provisioner.telemetry import Metrics
from provisioner.telemetry.fleet import FleetCollector

from .stores import new_store
from .test_controllers import node


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition()[0].decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_transitions_and_step_durations_are_counted_as_the_store_moves_nodes(tmp_path):
    now = [1000.0]
    metrics = Metrics(clock=lambda: now[0])
    store = new_store(tmp_path)
    store.on_move = metrics.moved
    n = node(store, "a1", "rack-a")
    n = store.transition(n, Event.INSPECT, step=Step.SET_BOOT_DEVICE, deadline=2000)
    now[0] += 2
    n = store.set_step(n, Step.POWER_ON, 2000, expect_state=n.state)
    now[0] += 30
    store.transition(n, Event.DONE)
    got = samples(metrics)
    assert got[("provisioner_node_transitions_total", (("from_state", "enrolled"), ("to_state", "inspecting")))] == 1
    assert got[("provisioner_node_transitions_total", (("from_state", "inspecting"), ("to_state", "ready")))] == 1
    step = (("state", "inspecting"), ("step", "set-boot-device"))
    assert got[("provisioner_step_duration_seconds_count", step)] == 1
    assert got[("provisioner_step_duration_seconds_sum", step)] == 2
    power_on = (("state", "inspecting"), ("step", "power-on"))
    assert got[("provisioner_step_duration_seconds_sum", power_on)] == 30
    assert got[("provisioner_step_duration_seconds_bucket", (("le", "20.0"),) + power_on)] == 0
    assert got[("provisioner_step_duration_seconds_bucket", (("le", "30.0"),) + power_on)] == 1


def test_the_fleet_gauges_are_the_databases_counts(tmp_path):
    store = new_store(tmp_path)
    metrics = Metrics()
    counters = Counters()
    metrics.add(FleetCollector(lambda: {"nodes": store.tally_nodes(), "lost": store.tally_lost_hosts(),
                                        "jobs": store.tally_jobs(), "members": store.tally_job_members(),
                                        "guests": store.tally_guests()}, counters.snapshot, lambda: 3))
    a1, a2, b1 = node(store, "a1", "rack-a"), node(store, "a22", "rack-a"), node(store, "b333", "rack-b")
    store.transition(a1, Event.INSPECT, step=Step.POWER_ON, deadline=1e10)
    store.create_job(JobKind.REIMAGE, "all", {"kind": "reimage"}, [(a2.id, 0), (b1.id, 0)])
    counters.add("tftp:ipxe.efi")
    counters.add("bytes:tftp", 1000)
    counters.add("image_bytes_served", 5 << 20)
    counters.add("multicast_bytes_sent", 7)
    got = samples(metrics)
    assert got[("provisioner_nodes", (("rack", "rack-a"), ("state", "enrolled")))] == 1
    assert got[("provisioner_nodes", (("rack", "rack-a"), ("state", "inspecting")))] == 1
    assert got[("provisioner_nodes", (("rack", "rack-b"), ("state", "enrolled")))] == 1
    assert got[("provisioner_jobs", (("kind", "reimage"), ("status", "running")))] == 1
    assert got[("provisioner_job_members", (("kind", "reimage"), ("member", "node"), ("status", "pending")))] == 2
    assert got[("provisioner_boot_requests_total", (("server", "tftp"), ("what", "ipxe.efi")))] == 1
    assert got[("provisioner_boot_bytes_total", (("server", "tftp"),))] == 1000
    assert got[("provisioner_image_bytes_served_total", (("path", "unicast"),))] == 5 << 20
    assert got[("provisioner_image_bytes_served_total", (("path", "multicast"),))] == 7
    assert got[("provisioner_dhcp_restarts_total", ())] == 3
    assert not any(name == "provisioner_guests" for name, _ in got), "no guests, no series"


class _Flaky:
    def __init__(self) -> None:
        self.calls = 0

    def get_power(self, bmc):
        self.calls += 1
        if self.calls == 1:
            raise BmcUnreachable(bmc=bmc.endpoint, reason="timed out")
        return PowerState.ON


def test_bmc_commands_are_timed_and_their_errors_counted_by_kind():
    metrics = Metrics()
    power = PowerManager(_Flaky(), min_interval=0, backoff=0, sleep=lambda s: None)  # type: ignore[arg-type]
    power.observe = metrics.bmc_command
    bmc = BmcCredentials("10.0.0.1", 623, "admin", Secret("x"), driver=BmcDriver.REDFISH)
    assert power.status(bmc) == PowerState.ON
    got = samples(metrics)
    labels = (("command", "get_power"), ("driver", "redfish"))
    assert got[("provisioner_bmc_command_duration_seconds_count", labels)] == 2, "the retry is a command too"
    assert got[("provisioner_bmc_command_errors_total", labels + (("error", "BmcUnreachable"),))] == 1


def test_the_docs_and_the_grafana_dashboard_name_only_metrics_the_daemon_exposes(tmp_path):
    import json
    import re
    from pathlib import Path

    store = new_store(tmp_path)
    metrics = Metrics()
    counters = Counters()
    counters.add("dhcp:discover")
    metrics.add(FleetCollector(lambda: {"nodes": [], "lost": [], "jobs": [], "members": [], "guests": []},
                               counters.snapshot, lambda: 0))
    metrics.moved(1, "ready", "deploying", "power-on")
    metrics.moved(1, "deploying", "deploying", "wait-agent")
    metrics.bmc_command("ipmi", "get_power", 0.1, "BmcUnreachable")
    metrics.heartbeat("host")
    metrics.host_lost()
    metrics.http("GET", 200, 10)
    text = metrics.exposition()[0].decode()
    exposed = {f.name for f in text_string_to_metric_families(text)}
    exposed |= {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    exposed |= {"provisioner_nodes", "provisioner_hosts_lost_now", "provisioner_jobs", "provisioner_job_members",
                "provisioner_guests"}  # gauges with no series while the fleet is empty
    repo = Path(__file__).resolve().parents[2]
    dashboard = json.loads((repo / "docs/grafana-dashboard.json").read_text())
    used = {name for p in dashboard["panels"] for t in p["targets"] for name in re.findall(r"provisioner_\w+", t["expr"])}
    documented = set(re.findall(r"`(provisioner_\w+)`", (repo / "docs/metrics.md").read_text()))
    assert used and used <= exposed, used - exposed
    assert documented and documented <= exposed, documented - exposed
    store.close()
