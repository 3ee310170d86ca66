"""The agent's UEFI boot loader install, with efibootmgr played by a stand-in firmware:
the files on the EFI system partition, one entry of ours first in BootOrder however many
deploys came before, and a firmware that does not keep the entry is an error."""

from pathlib import Path

import pytest

from provisioner.agent import disk


class Firmware:
    """efibootmgr against a variable store kept in memory."""

    def __init__(self, keeps=True):
        self.entries = {"0001": "UEFI PXEv4 (MAC:525400990202)", "0002": "UEFI Misc Device"}
        self.order = ["0001", "0002"]
        self.keeps = keeps

    def __call__(self, *cmd, cwd=None):
        args = list(cmd[1:])
        if "-B" in args:
            number = args[args.index("-b") + 1]
            del self.entries[number]
            self.order.remove(number)
        elif "-c" in args and self.keeps:
            number = f"{max(int(n, 16) for n in self.entries) + 1:04X}"
            self.entries[number] = args[args.index("-L") + 1]
            self.order.insert(0, number)
        lines = [f"BootCurrent: 0002", f"BootOrder: {','.join(self.order)}"]
        lines += [f"Boot{n}* {label}\tHD(3,GPT,...)" for n, label in self.entries.items()]
        return "\n".join(lines) + "\n"


@pytest.fixture
def esp(tmp_path, monkeypatch):
    for name in ("SHIM", "GRUB", "FALLBACK"):
        path = tmp_path / f"{name.lower()}.efi.signed"
        path.write_bytes(name.encode())
        monkeypatch.setattr(disk, name, path)
    (tmp_path / "esp").mkdir()
    return tmp_path / "esp"


def test_the_loader_the_fallback_and_one_entry_first_in_boot_order(esp, monkeypatch):
    firmware = Firmware()
    monkeypatch.setattr(disk, "sh", firmware)
    first = disk.install_uefi_loader("/dev/vda", esp, "set root=...\n")
    second = disk.install_uefi_loader("/dev/vda", esp, "set root=...\n")  # a later deploy
    assert [label for label in firmware.entries.values()].count("provisioner") == 1
    assert firmware.order[0] == second and firmware.entries[second] == "provisioner" and first
    assert (esp / "EFI/provisioner/shimx64.efi").read_bytes() == b"SHIM"
    assert (esp / "EFI/BOOT/BOOTX64.EFI").read_bytes() == b"SHIM"
    assert (esp / "EFI/BOOT/grubx64.efi").read_bytes() == b"GRUB"
    assert (esp / "EFI/BOOT/fbx64.efi").read_bytes() == b"FALLBACK"
    csv = (esp / "EFI/provisioner/BOOTX64.CSV").read_bytes().decode("utf-16-le")
    assert csv.startswith("shimx64.efi,provisioner,,")
    assert (esp / "EFI/debian/grub.cfg").read_text() == "set root=...\n"
    assert not list(esp.rglob("*.tmp"))


def test_a_firmware_that_does_not_keep_the_entry_is_an_error(esp, monkeypatch):
    monkeypatch.setattr(disk, "sh", Firmware(keeps=False))
    with pytest.raises(disk.DiskError, match="did not keep the boot entry"):
        disk.install_uefi_loader("/dev/vda", esp, "")


def test_boot_entries_are_read_from_efibootmgr_lines():
    listing = "BootCurrent: 0003\nBootOrder: 0003,0001\nBoot0001* UEFI PXEv4\tPciRoot(0x0)\nBoot0003  provisioner\tHD(3)\n"
    assert disk.boot_entries(listing) == {"0001": "UEFI PXEv4", "0003": "provisioner"}
