"""Labs as instances: what a name and a slot derive, and how slots are handed out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.errors import LabError
from provisioner.lab import instances
from provisioner.lab.instances import LabConfig


def test_the_default_lab_keeps_the_paths_and_addresses_it_always_had():
    cfg = LabConfig()
    assert (cfg.netns, cfg.bridge, cfg.address, cfg.bridge_mac) == ("provlab", "provbr0", "10.99.0.1", "02:99:00:00:00:01")
    assert cfg.state_dir == Path("/var/lib/provisioner-lab") and cfg.socket == Path("/run/provisioner/api.sock")
    assert (cfg.dhcp_range, cfg.guest_range, cfg.endpoint_range) == (
        "10.99.0.100,10.99.0.199", "10.99.0.20-10.99.0.59", "10.99.0.60-10.99.0.69")
    assert cfg.mac_prefix == "52:54:00:99" and cfg.dashboard_port == 8180


def test_a_named_lab_derives_everything_from_its_name_and_slot():
    cfg = LabConfig(name="b", slot=7)
    assert (cfg.netns, cfg.bridge, cfg.address, cfg.mac_prefix) == ("provlab-b", "provbr7", "10.99.7.1", "52:54:07:99")
    assert cfg.state_dir == Path("/var/lib/provisioner-lab-b") and cfg.socket == Path("/run/provisioner/lab-b.sock")
    assert cfg.dashboard_port == 8187 and cfg.unused_address == "10.99.7.254"


@pytest.mark.parametrize("name", ["", "A", "1lab", "lab-a", "toolongname", "a/b"])
def test_a_bad_lab_name_is_refused_in_one_line(name):
    with pytest.raises(LabError, match="lower-case letters and digits"):
        instances.check_name(name)


def test_slots_are_the_lowest_free_and_the_default_lab_keeps_zero(tmp_path, monkeypatch):
    monkeypatch.setattr(instances, "STATE_ROOT", tmp_path)
    monkeypatch.setattr(instances, "LOCK", tmp_path / "lock")
    for name, slot in (("a", 1), ("c", 3)):
        (tmp_path / f"provisioner-lab-{name}").mkdir()
        (tmp_path / f"provisioner-lab-{name}" / "lab.json").write_text(json.dumps({"slot": slot}))
    with instances.slot_for("b") as slot:
        assert slot == 2
    with instances.slot_for("lab") as slot:
        assert slot == 0
    assert instances.config_for("c").slot == 3 and instances.config_for("d").slot == 0
    assert {"a", "c"} <= set(instances.names())
