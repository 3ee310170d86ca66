"""A UEFI (OVMF) lab node with no iPXE option ROM, behind a Redfish BMC (sushy-tools'
emulator over TLS): the one-time network boot and the power go over Redfish, the
firmware's own PXE client takes the loader branch (snponly.efi over TFTP), iPXE then
takes the script branch, once."""

import re


def test_a_uefi_node_enrolls_to_ready(uefi_lab):
    name = "lab-r1-n1"
    code, _, err = uefi_lab.cli(*uefi_lab.enroll_args(name))
    assert code == 0, err
    node = uefi_lab.client.get(f"/v1/nodes/{name}")
    assert node["state"] == "ready" and node["inspection"]["firmware"] == "uefi"
    assert node["bmc"]["driver"] == "redfish" and node["bmc"]["system"] == uefi_lab.inventory[name]["bmc"]["system"]
    events = [e["message"] for e in uefi_lab.client.get(f"/v1/nodes/{name}/events")["events"]]
    assert any(f"one-time network boot set via Redfish {uefi_lab.lab.redfish.url}" in m for m in events), events
    assert any("powered on via Redfish" in m for m in events), events
    mac = uefi_lab.inventory[name]["mac"]
    ip = re.search(rf"DHCPACK\(provbr0\) (\S+) {mac}", uefi_lab.log("dnsmasq.log")).group(1)
    tftp = [line.split(None, 1)[1] for line in uefi_lab.log("tftp.log").splitlines()]
    loader = [i for i, line in enumerate(tftp) if line == f"{ip} RRQ snponly.efi sent"]
    script = [i for i, line in enumerate(tftp) if line == f"{ip} RRQ boot.ipxe sent"]
    # OVMF asks for the loader's size, then the loader; iPXE then gets the script, and
    # never the loader again (no chainload loop).
    assert 1 <= len(loader) <= 2 and len(script) == 1 and script[0] > loader[-1]
    console = uefi_lab.lab.console_log(name).read_text(errors="replace")
    assert "mounting efivarfs" not in console  # the maintenance image mounts efivars on UEFI
