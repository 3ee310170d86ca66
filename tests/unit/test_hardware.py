"""Agents' reports, parsed once into typed records; a malformed one is one clear error."""

import pytest

from provisioner.errors import InvalidInput
from provisioner.hardware import Disk, Hardware, HostFacts

INVENTORY = {"cpu": {"count": 2}, "memory": {"total_mib": 2048, "usable_mib": 1980},
             "disks": [{"name": "vda", "size_bytes": 20 << 30}], "nics": [{"mac": "52:54:00:00:00:01"}],
             "dmi": {"sys_vendor": "QEMU", "product_serial": "S-1"}, "firmware": "bios"}


def test_an_inspection_is_read_into_fields():
    hw = Hardware.parse(INVENTORY)
    assert (hw.cpus, hw.memory_mib, hw.disks, hw.nics, hw.firmware, hw.vendor, hw.serial) == \
        (2, 2048, (Disk("vda", 20 << 30),), 1, "bios", "QEMU", "S-1")
    assert hw.summary() == "2 CPUs, 2048 MiB, 1 disks, 1 NICs, bios"
    assert hw.view()["disks"] == ["vda:20G"] and hw.view()["disk_bytes"] == 20 << 30


@pytest.mark.parametrize("change, words", [
    ({"cpu": []}, "inventory.cpu must be a dict"),
    ({"cpu": {"count": "two"}}, "inventory.cpu.count must be a whole number"),
    ({"cpu": {"count": True}}, "inventory.cpu.count must be a whole number"),
    ({"memory": {"total_mib": -1}}, "inventory.memory.total_mib"),
    ({"disks": [{"size_bytes": 1}]}, "inventory.disks[0] must be an object with a name"),
    ({"disks": [{"name": "vda", "size_bytes": "big"}]}, "inventory.disks[0].size_bytes"),
    ({"firmware": 7}, "inventory.firmware must be a str"),
])
def test_a_malformed_inspection_is_one_clear_error(change, words):
    with pytest.raises(InvalidInput, match=words.replace("[", r"\[").replace("]", r"\]")):
        Hardware.parse({**INVENTORY, **change})


def test_host_facts():
    facts = HostFacts.parse({"address": "10.99.0.101", "cpu": {"count": 2}, "memory": {"usable_mib": 1900},
                             "hypervisor": {"kvm": True}, "base_sha256": "ab" * 32})
    assert (facts.address, facts.cpus, facts.memory_mib, facts.kvm) == ("10.99.0.101", 2, 1900, True)
    assert HostFacts.parse({"memory": {"total_mib": 512}}).memory_mib == 512
    for bad in (None, [], {"address": 5}, {"cpu": "two"}, {"hypervisor": []}, {"memory": {"usable_mib": "x"}}):
        with pytest.raises(InvalidInput):
            HostFacts.parse(bad)
