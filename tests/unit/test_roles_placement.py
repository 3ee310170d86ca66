"""The roles file and guest placement: bad input named precisely, pinned cores never
shared, spread across racks, idempotent, scaling down removes the highest numbers."""

import pytest

from provisioner.errors import InvalidInput
from provisioner.guests.placement import Guest, Host, place
from provisioner.guests.roles import parse_roles

ROLES = """
roles:
  - name: web
    base: guest:1
    app: web-app
    vcpus: 1
    memory_mib: 256
    count: 3
    upgrade_domains: 2
    vars: {port: 8080}
  - name: worker
    base: guest-b
    vcpus: 2
    memory_mib: 512
    count: 1
"""

HOSTS = [Host("h1", "rack-1", 4, 4096), Host("h2", "rack-1", 4, 4096), Host("h3", "rack-2", 4, 4096)]


def test_a_roles_file_reads_with_defaults():
    web, worker = parse_roles(ROLES)
    assert (web.name, web.base, web.app, web.vcpus, web.memory_mib, web.count) == ("web", "guest:1", "web-app", 1, 256, 3)
    assert web.spread == "rack" and web.upgrade_domains == 2 and web.vars == {"port": 8080}
    assert worker.app is None and worker.upgrade_domains == 1 and worker.user_data is None


@pytest.mark.parametrize("text,words", [
    ("roles: [", "invalid YAML at line 1"),
    ("nodes: []", "expected a top-level 'roles:' list"),
    ("roles:\n  - {name: web, base: a, vcpus: 1, memory_mib: 64, count: 1}\n"
     "  - {name: web, base: b, vcpus: 1, memory_mib: 64, count: 1}", "role 'web' is defined twice"),
    ("roles:\n  - {name: Web, base: a, vcpus: 1, memory_mib: 64, count: 1}", "invalid role name"),
    ("roles:\n  - {name: web, vcpus: 1, memory_mib: 64, count: 1}", "role web: 'base' must be a catalog image"),
    ("roles:\n  - {name: web, base: a, vcpus: 0, memory_mib: 64, count: 1}", "'vcpus' must be a whole number"),
    ("roles:\n  - {name: web, base: a, vcpus: 1, memory_mib: lots, count: 1}", "'memory_mib' must be"),
    ("roles:\n  - {name: web, base: a, vcpus: 1, memory_mib: 64}", "'count' is required"),
    ("roles:\n  - {name: web, base: a, vcpus: 1, memory_mib: 64, count: 1, cpus: 2}", "unknown key 'cpus'"),
    ("roles:\n  - {name: web, base: a, vcpus: 1, memory_mib: 64, count: 1, spread: far}", "'spread' must be"),
    ("roles:\n  - {name: web, base: a, vcpus: 1, memory_mib: 64, count: 1, user_data: nope.j2}",
     "cannot read the user_data template"),
])
def test_bad_roles_files_are_refused_with_the_problem_named(text, words, tmp_path):
    with pytest.raises(InvalidInput, match=words.replace("(", r"\(").replace("[", r"\[")):
        parse_roles(text, tmp_path)


def test_guests_spread_across_racks_on_their_own_cores():
    plan = place(parse_roles(ROLES), HOSTS, [])
    where = {g.name: (g.host, g.cores) for g in plan.add}
    # web-1 and web-2 in different racks before any rack gets a second one.
    assert {HOSTS[[h.name for h in HOSTS].index(where["web-1"][0])].rack,
            HOSTS[[h.name for h in HOSTS].index(where["web-2"][0])].rack} == {"rack-1", "rack-2"}
    assert len({where[n][0] for n in ("web-1", "web-2", "web-3")}) == 3  # one per host
    # Core 0 stays with the host; no core is given twice on a host.
    for host in HOSTS:
        cores = [c for g in plan.add if g.host == host.name for c in g.cores]
        assert 0 not in cores and len(cores) == len(set(cores))
    assert [g.upgrade_domain for g in plan.add if g.role == "web"] == [0, 1, 0]
    assert next(g for g in plan.add if g.role == "worker").cores.__len__() == 2


def test_placing_again_changes_nothing_and_a_smaller_count_removes_the_highest():
    roles = parse_roles(ROLES)
    first = place(roles, HOSTS, [])
    again = place(roles, HOSTS, first.add)
    assert not again.changes and sorted(g.name for g in again.keep) == sorted(g.name for g in first.add)
    fewer = parse_roles(ROLES.replace("count: 3", "count: 2"))
    scaled = place(fewer, HOSTS, first.add)
    assert [g.name for g in scaled.remove] == ["web-3"] and not scaled.add
    gone = place([r for r in roles if r.name == "web"], HOSTS, first.add)
    assert [g.name for g in gone.remove] == ["worker-1"]


def test_a_role_bigger_than_any_host_names_the_shortfall():
    big = parse_roles("roles:\n  - {name: big, base: a, vcpus: 8, memory_mib: 1024, count: 1}")
    with pytest.raises(InvalidInput, match=r"role big needs 8 cores and 1024 MiB per guest; the biggest host, "
                                           r"h1, has 3 cores and 3584 MiB for guests .* short by 5 cores and 0 MiB"):
        place(big, HOSTS, [])


def test_a_full_fleet_names_the_guest_that_does_not_fit_and_plans_nothing():
    many = parse_roles("roles:\n  - {name: web, base: a, vcpus: 2, memory_mib: 256, count: 4}")
    with pytest.raises(InvalidInput, match=r"no room for web-4, which needs 2 cores and 256 MiB: the most free is "
                                           r"h\d with 1 core"):
        place(many, HOSTS, [])


def test_existing_guests_keep_their_cores():
    kept = Guest("web-1", "web", 1, "h1", (1,), 256, 0)
    plan = place(parse_roles("roles:\n  - {name: web, base: a, vcpus: 1, memory_mib: 256, count: 3, spread: none}"),
                 [HOSTS[0]], [kept])
    assert plan.keep == [kept] and [g.cores for g in plan.add] == [(2,), (3,)]


def test_no_host_at_all_is_one_clear_line():
    with pytest.raises(InvalidInput, match="no active host to place guests on"):
        place(parse_roles(ROLES), [], [])


def test_a_guest_domain_pins_its_cores_and_mounts_its_disks_read_only():
    import xml.etree.ElementTree as ET

    from provisioner.guests.render import NAMESPACE, domain_xml

    guest = Guest("web-2", "web", 2, "h1", (2, 3), 256, 1)
    root = ET.fromstring(domain_xml(guest, domain_type="qemu", overlay="/p/web-2.qcow2", config_drive="/p/web-2.iso",
                                    console_log="/p/web-2.log", base_sha256="ab" * 32, app="/p/app.raw",
                                    app_sha256="cd" * 32))
    assert root.findtext("name") == "web-2" and root.get("type") == "qemu"
    assert root.find("vcpu").text == "2" and root.find("vcpu").get("cpuset") == "2,3"
    assert [(p.get("vcpu"), p.get("cpuset")) for p in root.iter("vcpupin")] == [("0", "2"), ("1", "3")]
    disks = {d.find("target").get("dev"): d for d in root.iter("disk")}
    assert disks["vda"].find("source").get("file") == "/p/web-2.qcow2" and disks["vda"].find("readonly") is None
    assert disks["vdb"].find("readonly") is not None and disks["hdc"].find("readonly") is not None
    meta = root.find(f"metadata/{{{NAMESPACE}}}guest")
    assert (meta.get("role"), meta.get("index"), meta.get("upgrade-domain")) == ("web", "2", "1")
    assert root.find("devices/interface/rom").get("enabled") == "no", "guests never boot from the network"


def test_user_data_is_rendered_per_guest_and_a_bad_template_is_named():
    from provisioner.guests.render import config_files

    role = parse_roles("roles:\n  - {name: web, base: a, vcpus: 1, memory_mib: 64, count: 2, vars: {port: 8080}}")[0]
    role = type(role)(**{**role.__dict__, "user_data": "#cloud-config\n# {{ guest.name }} on {{ guest.host }}:{{ port }}\n"})
    files = config_files(role, Guest("web-2", "web", 2, "h1", (1,), 64, 0), "h1")
    assert files["user-data"] == "#cloud-config\n# web-2 on h1:8080\n"
    assert "instance-id: web-2" in files["meta-data"]
    broken = type(role)(**{**role.__dict__, "user_data": "{{ nope }}"})
    with pytest.raises(InvalidInput, match="role web: its user_data template fails for web-2: 'nope' is undefined"):
        config_files(broken, Guest("web-2", "web", 2, "h1", (1,), 64, 0), "h1")


def test_the_documented_example_is_a_valid_roles_file():
    from pathlib import Path

    from provisioner.guests.render import config_files

    examples = Path(__file__).resolve().parents[2] / "docs/examples"
    roles = parse_roles((examples / "roles.yaml").read_text(), examples)
    assert [r.name for r in roles] == ["web", "worker"]
    plan = place(roles, HOSTS, [])
    web1 = next(g for g in plan.add if g.name == "web-1")
    assert "hostname: web-1" in config_files(roles[0], web1, web1.host)["user-data"]
