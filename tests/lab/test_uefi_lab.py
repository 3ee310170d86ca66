"""A UEFI (OVMF) lab node with no iPXE option ROM, behind a Redfish BMC (sushy-tools'
emulator over TLS): the one-time network boot and the power go over Redfish, the
firmware's own PXE client takes the loader branch (snponly.efi over TFTP), iPXE then
takes the script branch, once. Then the node is reimaged: it boots its host from its disk
through Debian's signed shim and GRUB, with the firmware's boot entry the deploy made, also
with the provisioner stopped; it rolls back, and boots the maintenance image again."""

import re
import time
from pathlib import Path

from provisioner.lab import hypervisor

from .conftest import import_missing

HOST_IMAGE = Path(__file__).resolve().parents[2] / "build/images/host/host.qcow2"


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


EFIVARS = r"""
import struct
g = '8be4df61-93ca-11d2-aa0d-00e098032b8c'
def var(name):
    return open(f'/sys/firmware/efi/efivars/{name}-{g}', 'rb').read()[4:]
current = struct.unpack('<H', var('BootCurrent'))[0]
raw = var('BootOrder')
order = struct.unpack(f'<{len(raw) // 2}H', raw)
entry = var(f'Boot{current:04X}')[6:]  # after Attributes and FilePathListLength
end = next(i for i in range(0, len(entry), 2) if entry[i:i + 2] == bytes(2))
label = entry[:end].decode('utf-16-le')
print(f'{current:04X}', ' '.join(f'{o:04X}' for o in order), label, sep='|')
"""


def firmware_state(lab, name: str) -> tuple[str, list[str], str]:
    """What the host's firmware says, from inside the host: the entry it booted, BootOrder,
    and the booted entry's label."""
    current, order, label = lab.ssh(name, f"python3 -c \"{EFIVARS}\"").strip().split("|")
    return current, order.split(), label


def test_a_uefi_node_boots_its_host_from_disk_rolls_back_and_inspects_again(uefi_lab):
    lab, name = uefi_lab, "lab-r1-n1"
    import_missing(lab, HOST_IMAGE, "host")
    code, out, err = lab.cli("reimage", name, "--image", "host")
    assert code == 0, out + err
    events = " ".join(e["message"] or "" for e in lab.events(name))
    entry = re.search(r"UEFI boot entry Boot([0-9A-F]{4})", events).group(1)
    current, order, label = firmware_state(lab, name)
    assert (current, order[0], label) == (entry, entry, "provisioner"), (current, order, label)
    # The disk boots the host with none of our boot servers there: the daemon (with its
    # DHCP, TFTP and HTTP) is stopped and the node power-cycled behind its back.
    doc = lab.client.get(f"/v1/nodes/{name}")
    lab.lab.stop_daemon()
    try:
        conn = hypervisor.connect()
        try:
            dom = conn.lookupByName(name)
            dom.destroy()
            dom.create()
        finally:
            conn.close()
        end = time.monotonic() + 240
        while True:  # until the host answers SSH, with the key the deploy recorded
            try:
                state = lab.ssh(name, "cat /var/lib/provisioner/disk/state", doc=doc)
                break
            except AssertionError:
                assert time.monotonic() < end, lab.lab.console_log(name).read_text(errors="replace")[-3000:]
                time.sleep(3)
        assert state.startswith(f"base={doc['image_sha256']}")
    finally:
        lab.lab.restart_daemon()
    assert firmware_state(lab, name)[0] == entry, "it booted the entry the deploy made"
    # Rollback: the layer goes, the entry is made again, no bytes sent.
    requests = lab.image_requests()
    code, out, err = lab.cli("rollback", name)
    assert code == 0, out + err
    assert lab.image_requests() == requests and lab.client.get(f"/v1/nodes/{name}")["state"] == "active"
    assert firmware_state(lab, name)[2] == "provisioner"
    # And a later maintenance boot still works (no loop, no stranded node).
    code, out, err = lab.cli("inspect", name)
    assert code == 0, out + err
    assert lab.client.get(f"/v1/nodes/{name}")["state"] == "ready"
