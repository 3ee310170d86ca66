"""The guest network and role endpoints as the plan sees them: stable addresses from the
guest range, a VIP per role with endpoints, and bad input refused in one line with
nothing changed (a port clash, an exhausted range, a swap of unlike roles, a guest range
over the provisioning network's DHCP range, a host with no bridge)."""

import json
from pathlib import Path

import pytest

from provisioner import config
from provisioner.config import Settings
from provisioner.errors import ConfigError, InvalidInput
from provisioner.guests.roles import Endpoint, Protocol
from provisioner.images import Catalog
from provisioner.network.endpoints import Slot, swap
from provisioner.network.haproxy import Haproxy, Health, Listener, Server, parse_stats
from provisioner.network.names import hosts_text
from provisioner.store import Store
from provisioner.workflows.endpoints import EndpointService
from provisioner.workflows.guests import GuestService
from tests.unit.stores import new_store

NET = {"network.subnet": "10.99.0.0/24", "network.gateway": "10.99.0.1", "network.guest_range": "10.99.0.20-10.99.0.29",
       "network.endpoint_range": "10.99.0.60-10.99.0.61", "dhcp.interface": "br0"}
ROLES = """
roles:
  - name: web
    base: guest
    vcpus: 1
    memory_mib: 256
    count: {web}
    upgrade_domains: 2
    endpoints: [{{port: 80, check: /health, interval: 1}}]
{extra}
"""
STAGING = """
  - name: web-staging
    base: guest
    vcpus: 1
    memory_mib: 256
    count: 1
    endpoints: [{port: 80, check: /health}]
"""


def service(tmp_path: Path, bridge: str = "br0", **overrides: str) -> GuestService:
    store = new_store()
    for name, rack in (("h1", "rack-1"), ("h2", "rack-2")):
        store.add_host(name=name, address="192.0.2.1", port=22, rack=rack, host_key="ssh-ed25519 AAAA", cores=5,
                       memory_mib=4096, bridge=bridge)
    store.add_image(name="guest", version="1", sha256="a" * 64, fmt="qcow2", virtual_size=1 << 30, size=1 << 20,
                    source="test")
    settings = config.load(overrides={"server.data_dir": str(tmp_path), **NET, **overrides}, environ={})
    return GuestService(settings, store, Catalog(tmp_path / "images", store),
                        EndpointService(settings, store, None, None))


def made(svc: GuestService, web: int, extra: str = "") -> dict:
    doc = svc.plan({"roles": ROLES.format(web=web, extra=extra)})
    work = [e for e in doc["entries"] if e["action"] != "keep"]
    job = svc.store.create_deploy_job("roles.yaml", {}, work)
    svc.store.replace_endpoints(doc["endpoints"])
    for e in work:
        if e["action"] == "remove":
            svc.store.delete_guest(e["guest"])
        else:
            svc.store.set_guest(e["guest"], state="ready", spec_sha256=e["spec"]["spec_sha256"])
    svc.store.end_job(job, "done")
    return doc


def test_guests_get_stable_addresses_and_a_role_its_vip(tmp_path):
    svc = service(tmp_path)
    doc = made(svc, web=3)
    addresses = {g["name"]: g["address"] for g in svc.store.guests()}
    assert addresses == {"web-1": "10.99.0.20", "web-2": "10.99.0.21", "web-3": "10.99.0.22"}
    assert [(e["name"], e["role"], e["vip"]) for e in doc["endpoints"]] == [("web", "web", "10.99.0.60")]
    files = next(e for e in doc["entries"] if e["guest"] == "web-2")["spec"]["files"]
    assert "addresses: [10.99.0.21/24]" in files["network-config"] and "gateway4: 10.99.0.1" in files["network-config"]
    assert 'macaddress: "52:54:0a:63:00:15"' in files["network-config"]
    assert "provisioner-role: web" in files["meta-data"] and "provisioner-image: guest:1" in files["meta-data"]
    again = svc.plan({"roles": ROLES.format(web=3, extra="")})
    assert {e["action"] for e in again["entries"]} == {"keep"}, "the same file changes nothing"
    made(svc, web=2)
    made(svc, web=3)
    assert {g["name"]: g["address"] for g in svc.store.guests()} == addresses, "web-3 is made again on a free address"


def test_an_exhausted_vip_range_and_port_clashes_change_nothing(tmp_path):
    svc = service(tmp_path, **{"network.endpoint_range": "10.99.0.60-10.99.0.60"})
    made(svc, web=1)
    with pytest.raises(InvalidInput, match=r"network.endpoint_range 10.99.0.60-10.99.0.60 is exhausted: all 1 "
                                           r"addresses are taken, none left for role web-staging's endpoint"):
        svc.plan({"roles": ROLES.format(web=1, extra=STAGING)})
    with pytest.raises(InvalidInput, match="endpoint port 8080 clashes with the provisioner's own HTTP API"):
        svc.plan({"roles": ROLES.format(web=1, extra="").replace("port: 80,", "port: 8080,")})
    twice = ROLES.format(web=1, extra="").replace("endpoints: [{port: 80, check: /health, interval: 1}]",
                                                  "endpoints: [{port: 80}, {port: 80, protocol: tcp}]")
    with pytest.raises(InvalidInput, match="endpoint port 80 is declared twice"):
        svc.plan({"roles": twice})
    assert [e["name"] for e in svc.store.endpoints()] == ["web"] and len(svc.store.guests()) == 1


def test_a_host_without_a_bridge_takes_no_networked_guest(tmp_path):
    svc = service(tmp_path, bridge="")
    with pytest.raises(InvalidInput, match="host h1 has no bridge for the guest network"):
        svc.plan({"roles": ROLES.format(web=1, extra="")})


def test_a_guest_range_over_the_provisioning_range_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"network.guest_range 10.99.0.150-10.99.0.160 overlaps the provisioning "
                                          r"network's DHCP range \(dhcp.range 10.99.0.100-10.99.0.199\)"):
        config.load(overrides={**NET, "network.guest_range": "10.99.0.150-10.99.0.160"}, environ={})
    with pytest.raises(ConfigError, match="overlaps network.endpoint_range"):
        config.load(overrides={**NET, "network.guest_range": "10.99.0.20-10.99.0.60"}, environ={})


def test_swap_exchanges_roles_only_between_like_endpoints(tmp_path):
    web = Slot("web", "web", "10.99.0.60", (Endpoint(80),))
    staging = Slot("web-staging", "web-staging", "10.99.0.61", (Endpoint(80, check="/ok"),))
    a, b = swap([web, staging], "web", "web-staging")
    assert (a.name, a.role, a.vip, a.ports[0].check) == ("web", "web-staging", "10.99.0.60", "/ok")
    assert (b.name, b.role, b.vip) == ("web-staging", "web", "10.99.0.61")
    tcp = Slot("db", "db", "10.99.0.62", (Endpoint(80, Protocol.TCP),))
    with pytest.raises(InvalidInput, match=r"roles web and db have different endpoints \(web: 80/http; db: 80/tcp\)"):
        swap([web, tcp], "web", "db")
    with pytest.raises(InvalidInput, match="role worker has no endpoint to swap"):
        swap([web, tcp], "web", "worker")


def test_store_swap_and_dry_run(tmp_path):
    svc = service(tmp_path, **{"network.endpoint_range": "10.99.0.60-10.99.0.61"})
    made(svc, web=1, extra=STAGING)
    ep = svc.endpoints
    doc = ep.swap("web", "web-staging", dry_run=True)
    assert [(e["name"], e["role_before"], e["role_after"]) for e in doc["endpoints"]] == \
        [("web", "web", "web-staging"), ("web-staging", "web-staging", "web")]
    assert {e["name"]: e["role"] for e in svc.store.endpoints()} == {"web": "web", "web-staging": "web-staging"}
    svc.store.swap_endpoints("web", "web-staging")
    assert {e["name"]: e["role"] for e in svc.store.endpoints()} == {"web": "web-staging", "web-staging": "web"}
    again = svc.plan({"roles": ROLES.format(web=1, extra=STAGING)})
    assert [(e["name"], e["role"]) for e in again["endpoints"]] == [("web", "web-staging"), ("web-staging", "web")], \
        "a deploy after a swap keeps each role on the endpoint it was swapped to"


def test_haproxy_config_and_stats():
    text = Haproxy(Path("/nonexistent")).render([Listener("web-80", "10.99.0.60", 80, Endpoint(80, check="/health"),
                                                          (Server("web-1", "10.99.0.20", 80, True),
                                                           Server("web-2", "10.99.0.21", 80, False)))])
    assert "bind 10.99.0.60:80" in text and "option httpchk GET /health" in text
    assert "server web-1 10.99.0.20:80 check\n" in text and "server web-2 10.99.0.21:80 check disabled\n" in text
    head = "# pxname,svname," + ",".join(f"f{i}" for i in range(2, 40))
    row = ["web-80", "web-1"] + [""] * 38
    row[4], row[7], row[17], row[36] = "2", "10", "UP", "L7OK"
    down = list(row)
    down[1], down[17], down[36], down[4] = "web-2", "MAINT", "", "0"
    stats = parse_stats("\n".join([head, ",".join(row), ",".join(down), "web-80,BACKEND" + "," * 38]))
    assert [(s.server, s.health, s.sessions, s.check) for s in stats] == \
        [("web-1", Health.UP, 2, "L7OK"), ("web-2", Health.OUT, 0, "")]


def test_names_keep_their_first_owner():
    text = hosts_text("lab.internal", [[("n1", "10.99.0.100")], [("web-1", "10.99.0.20")], [("n1", "10.99.0.60")]])
    assert text == "10.99.0.100 n1.lab.internal n1\n10.99.0.20 web-1.lab.internal web-1\n"


def test_settings_default_to_no_guest_network():
    assert Settings().guest_network is None


@pytest.mark.parametrize("check", ["health", "/a b", "/x#y", "/x\\y", '/x"y', "/x'y", "/" + "a" * 300])
def test_a_check_path_that_is_not_a_plain_url_path_is_refused(tmp_path, check):
    svc = service(tmp_path)
    text = ROLES.format(web=1, extra="").replace("check: /health", "check: " + json.dumps(check))
    with pytest.raises(InvalidInput, match="'check' must be a URL path like /health"):
        svc.plan({"roles": text})
