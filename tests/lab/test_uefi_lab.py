"""A UEFI (OVMF) lab node goes through the same chain and reports UEFI firmware."""

import re


def test_a_uefi_node_enrolls_to_ready(uefi_lab):
    name = "lab-r1-n1"
    code, _, err = uefi_lab.cli(*uefi_lab.enroll_args(name))
    assert code == 0, err
    node = uefi_lab.client.get(f"/v1/nodes/{name}")
    assert node["state"] == "ready" and node["inspection"]["firmware"] == "uefi"
    mac = uefi_lab.inventory[name]["mac"]
    ip = re.search(rf"DHCPACK\(provbr0\) (\S+) {mac}", uefi_lab.log("dnsmasq.log")).group(1)
    assert f"{ip} RRQ boot.ipxe sent" in uefi_lab.log("tftp.log")
    console = uefi_lab.lab.console_log(name).read_text(errors="replace")
    assert "mounting efivarfs" not in console  # the maintenance image mounts efivars on UEFI
