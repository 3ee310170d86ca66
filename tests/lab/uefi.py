"""What a UEFI lab node's firmware says, read from inside its host over SSH: the entry it
booted, BootOrder and Secure Boot, from efivars."""

from __future__ import annotations

import re


EFIVARS = r"""
import struct
g = '8be4df61-93ca-11d2-aa0d-00e098032b8c'
def var(name):
    return open(f'/sys/firmware/efi/efivars/{name}-{g}', 'rb').read()[4:]
current = struct.unpack('<H', var('BootCurrent'))[0]
raw = var('BootOrder')
order = struct.unpack(f'<{len(raw) // 2}H', raw)
def label(number):
    entry = var(f'Boot{number:04X}')[6:]  # after Attributes and FilePathListLength
    end = next(i for i in range(0, len(entry), 2) if entry[i:i + 2] == bytes(2))
    return entry[:end].decode('utf-16-le')
try:
    secure = var('SecureBoot')[0]
except OSError:
    secure = '-'
print(f'{current:04X}', ' '.join(f'{o:04X}' for o in order), label(current), secure, label(order[0]), sep='|')
"""


def firmware_state(lab, name: str, doc: dict | None = None) -> tuple[str, list[str], str, str, str]:
    """What the host's firmware says, read from inside the host: the entry it booted,
    BootOrder, the booted entry's label, SecureBoot (1: shim, GRUB and the kernel were
    verified), and the label of the entry first in BootOrder."""
    current, order, label, secure, first = lab.ssh(name, f"python3 -c \"{EFIVARS}\"", doc=doc).strip().split("|")
    return current, order.split(), label, secure, first


def boot_entry(lab, name: str, since: float) -> str:
    """The firmware boot entry the node's last deploy made, as its events say."""
    events = " ".join(e["message"] or "" for e in lab.events(name, since))
    found = re.findall(r"UEFI boot entry Boot([0-9A-F]{4})", events)
    assert found, f"{name}: no UEFI boot entry in its events"
    return found[-1]


def assert_booted_its_entry(lab, name: str, since: float) -> None:
    entry = boot_entry(lab, name, since)
    current, order, label, secure, _ = firmware_state(lab, name)
    assert (current, order[0], label, secure) == (entry, entry, "provisioner", "0"), (entry, current, order, label)


def assert_secure_boot_node(lab, name: str, started: float) -> None:
    """The Secure Boot node: found so at enrollment, switched off for the maintenance image
    (iPXE is not signed), on for the disk; its host came up through the signed chain with
    the firmware enforcing (SecureBoot 1, the kernel locked down). The variables the lab's
    firmware keeps for Secure Boot on had no entry of ours (the agent made it with Secure
    Boot off, in the other store): the firmware booted the disk's removable-media path, and
    shim's fallback made our entry there, first in BootOrder, and started it."""
    doc = lab.client.get(f"/v1/nodes/{name}")
    assert doc["secure_boot"] is True and doc["host"]["facts"]["secure_boot"] is True
    events = [e["message"] or "" for e in lab.events(name, started)]
    assert any("one-time network boot set via Redfish" in m and "(Secure Boot off: iPXE is not signed)" in m
               for m in events), events
    assert any(m.startswith("boot from disk set") and m.endswith(", Secure Boot on") for m in events), events
    current, order, label, secure, first = firmware_state(lab, name)
    assert (first, secure) == ("provisioner", "1"), (current, order, label, secure, first)
    assert "lockdown" in lab.ssh(name, "dmesg | grep -i -m1 lockdown || true").lower()
