"""What a deploy would do, from the roles file and the guests table: add, keep, repair a
guest a failure left, roll a changed one in its upgrade domain's batch, place a resized
one again, remove the extra ones; refuse while hosts running guests are away."""

from pathlib import Path

import pytest

from provisioner.config import Settings
from provisioner.errors import Conflict
from provisioner.images import Catalog
from provisioner.store import Store
from provisioner.workflows.endpoints import EndpointService
from provisioner.workflows.guests import GuestService
from tests.unit.stores import new_store

ROLES = """
roles:
  - name: web
    base: guest
    vcpus: 1
    memory_mib: 256
    count: {web}
    upgrade_domains: 2
    vars: {{v: {v}}}
    user_data: web.j2
"""


@pytest.fixture
def service(tmp_path: Path) -> GuestService:
    store = new_store()
    for name, rack in (("h1", "rack-1"), ("h2", "rack-2")):
        store.add_host(name=name, address="192.0.2.1", port=22, rack=rack, host_key="ssh-ed25519 AAAA", cores=5,
                       memory_mib=4096)
    for version, sha in (("1", "a" * 64), ("2", "b" * 64)):
        store.add_image(name="guest", version=version, sha256=sha, fmt="qcow2", virtual_size=1 << 30, size=1 << 20,
                        source="test")
    settings = Settings(server_data_dir=tmp_path)
    return GuestService(settings, store, Catalog(tmp_path / "images", store),
                        EndpointService(settings, store, None, None))


def plan(svc: GuestService, web: int = 3, v: int = 1, base: str = "guest:1") -> dict[str, tuple[str, int]]:
    text = ROLES.format(web=web, v=v).replace("base: guest", f"base: {base}")
    doc = svc.plan({"roles": text, "templates": {"web.j2": "# {{ v }} {{ guest.name }}\n"}})
    return {e["guest"]: (e["action"], e["batch"]) for e in doc["entries"]}


def made(svc: GuestService, web: int = 3, v: int = 1, base: str = "guest:1") -> None:
    """As if a deploy job had made every guest of the plan, ready."""
    text = ROLES.format(web=web, v=v).replace("base: guest", f"base: {base}")
    doc = svc.plan({"roles": text, "templates": {"web.j2": "# {{ v }} {{ guest.name }}\n"}})
    work = [e for e in doc["entries"] if e["action"] != "keep"]
    job = svc.store.create_deploy_job("roles.yaml", {}, work)
    for e in work:
        if e["action"] == "remove":
            svc.store.delete_guest(e["guest"])
        else:
            svc.store.set_guest(e["guest"], state="ready", spec_sha256=e["spec"]["spec_sha256"],
                                base_sha256=e["spec"]["base"]["sha256"], host=e["spec"]["guest"]["host"],
                                cores=e["spec"]["guest"]["cores"])
    svc.store.end_job(job, "done")


def test_first_deploy_adds_then_the_same_file_keeps_everything(service):
    assert plan(service) == {"web-1": ("add", 1), "web-2": ("add", 1), "web-3": ("add", 1)}
    made(service)
    assert plan(service) == {"web-1": ("keep", -1), "web-2": ("keep", -1), "web-3": ("keep", -1)}


def test_a_changed_spec_rolls_by_upgrade_domain_and_a_failed_guest_is_repaired(service):
    made(service)
    # upgrade_domains 2: web-1 and web-3 in domain 0 (batch 2), web-2 in domain 1 (batch 3)
    assert plan(service, base="guest:2") == {"web-1": ("roll", 2), "web-2": ("roll", 3), "web-3": ("roll", 2)}
    assert plan(service, v=2) == {"web-1": ("roll", 2), "web-2": ("roll", 3), "web-3": ("roll", 2)}
    service.store.set_guest("web-2", state="failed", last_error="boom")
    assert plan(service)["web-2"] == ("repair", 1)


def test_a_smaller_count_removes_the_highest_and_a_resize_places_again(service):
    made(service)
    assert plan(service, web=2) == {"web-3": ("remove", 0), "web-1": ("keep", -1), "web-2": ("keep", -1)}
    text = ROLES.format(web=3, v=1).replace("vcpus: 1", "vcpus: 2")
    doc = service.plan({"roles": text, "templates": {"web.j2": "# {{ v }}\n"}})
    assert {e["action"] for e in doc["entries"]} == {"roll"}
    assert all(len(e["spec"]["guest"]["cores"]) == 2 and e["spec"]["old_host"] for e in doc["entries"])


def test_a_guest_being_changed_refuses_a_deploy(service):
    made(service)
    service.store.set_guest("web-1", state="resetting")
    with pytest.raises(Conflict, match="being changed"):
        plan(service)
