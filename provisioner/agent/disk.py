"""The node's disk as the deploy lays it out (BIOS: MBR; UEFI: GPT and a third partition):

    partition 1  provboot (ext2)   extlinux (BIOS), and each kept base's kernel and initramfs
    partition 2  provdata (ext4)   images/<sha256>.<format>   read-only bases (immutable)
                                   layer.qcow2                the differencing layer
                                   state, node/               which base; the node's identity
    partition 3  PROVESP (FAT32)   UEFI only, the EFI system partition: Debian's signed shim
                                   and GRUB in EFI/provisioner/ (the firmware's boot entry)
                                   and EFI/BOOT/ (the path firmware boots when it has no
                                   entry), and EFI/debian/grub.cfg, where the signed GRUB
                                   looks for its configuration

Everything here shells out to the tools in the maintenance image (sfdisk, mke2fs,
mkfs.fat, extlinux, efibootmgr, qemu-img, qemu-nbd, chattr) and raises DiskError with
their reason."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOG = logging.getLogger("agent")
BOOT_LABEL = "provboot"
DATA_LABEL = "provdata"
ESP_LABEL = "PROVESP"
ESP_MIB = 256
MBR = Path("/usr/lib/EXTLINUX/mbr.bin")
SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
FALLBACK = Path("/usr/lib/shim/fbx64.efi.signed")
GRUB = Path("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
BOOT_ENTRY = "provisioner"
# Full paths: the image's busybox has applets of the same names that take other options.
MKE2FS = "/usr/sbin/mke2fs"
MKFS_FAT = "/usr/sbin/mkfs.fat"
SFDISK = "/usr/sbin/sfdisk"
CHATTR = "/usr/bin/chattr"
PARTX = "/usr/bin/partx"
EFIBOOTMGR = "/usr/bin/efibootmgr"


class DiskError(Exception):
    pass


def sh(*cmd: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600)
    except FileNotFoundError as exc:
        raise DiskError(f"{cmd[0]} is not in this image") from exc
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        LOG.error("agent: %s failed (exit %d): %s", " ".join(cmd), proc.returncode, " | ".join(detail)[:2000])
        raise DiskError(f"{' '.join(cmd[:3])}: {detail[0] if detail else f'exit {proc.returncode}'}")
    return proc.stdout


def partition(disk: str, number: int) -> str:
    return f"{disk}p{number}" if disk[-1].isdigit() else f"{disk}{number}"


def choose_disk(sys_root: Path = Path("/sys")) -> str:
    """The first non-removable, non-virtual disk with a size, by name."""
    for dev in sorted((sys_root / "block").iterdir()):
        name = dev.name
        if name.startswith(("loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd")):
            continue
        if (dev / "removable").exists() and (dev / "removable").read_text().strip() == "1":
            continue
        if int((dev / "size").read_text().strip() or 0) > 0:
            return f"/dev/{name}"
    raise DiskError("no disk found to lay the host down on")


def label_of(device: str) -> str | None:
    """The filesystem label of a partition, read from its ext superblock (offset 1024+120)."""
    try:
        with open(device, "rb") as fh:
            fh.seek(1024)
            sb = fh.read(136)
    except OSError:
        return None
    if len(sb) < 136 or sb[56:58] != b"\x53\xef":
        return None
    return sb[120:136].split(b"\0", 1)[0].decode(errors="replace") or None


def fat_label_of(device: str) -> str | None:
    """The volume label of a FAT32 partition, from its boot sector (offset 71, 11 bytes)."""
    try:
        with open(device, "rb") as fh:
            sector = fh.read(512)
    except OSError:
        return None
    if len(sector) < 512 or sector[510:512] != b"\x55\xaa" or sector[82:87] != b"FAT32":
        return None
    return sector[71:82].decode(errors="replace").strip() or None


def has_layout(disk: str, uefi: bool = False) -> bool:
    return label_of(partition(disk, 1)) == BOOT_LABEL and label_of(partition(disk, 2)) == DATA_LABEL and \
        (not uefi or fat_label_of(partition(disk, 3)) == ESP_LABEL)


def wait_for_partition(path: str, disk: str) -> None:
    for attempt in range(50):
        if os.path.exists(path):
            return
        if attempt == 1 and os.path.exists(PARTX):
            # Some kernels do not re-read a loop device's table on sfdisk's request;
            # partx adds the partitions one by one instead.
            subprocess.run([PARTX, "--add", disk], capture_output=True, check=False)
        time.sleep(0.1)
    raise DiskError(f"{path} did not appear after partitioning")


def disk_mib(disk: str, sys_root: Path = Path("/sys")) -> int:
    return int((sys_root / "class/block" / Path(disk).name / "size").read_text().strip()) * 512 >> 20


def create_layout(disk: str, boot_mib: int = 128, uefi: bool = False) -> None:
    """Partition and format the disk (everything on it is lost). UEFI: GPT, with the EFI
    system partition last, so that partitions 1 and 2 mean the same on both firmwares."""
    if uefi:
        data_mib = disk_mib(disk) - boot_mib - ESP_MIB - 4  # GPT's own tables, front and back
        if data_mib < 1024:
            raise DiskError(f"{disk} is too small for a host ({data_mib + boot_mib + ESP_MIB} MiB)")
        LOG.info("agent: partitioning %s (GPT: provboot %d MiB, provdata %d MiB, EFI system %d MiB)", disk,
                 boot_mib, data_mib, ESP_MIB)
        script = f"label: gpt\n,{boot_mib}MiB,L\n,{data_mib}MiB,L\n,,U\n"
    else:
        LOG.info("agent: partitioning %s (provboot %d MiB, provdata the rest)", disk, boot_mib)
        script = f"label: dos\n,{boot_mib}MiB,L,*\n,,L\n"
    proc = subprocess.run([SFDISK, "--quiet", "--wipe", "always", disk], input=script,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise DiskError(f"sfdisk {disk}: {proc.stderr.strip()}")
    numbers = (1, 2, 3) if uefi else (1, 2)
    for n in numbers:
        wait_for_partition(partition(disk, n), disk)
    sh(MKE2FS, "-q", "-F", "-t", "ext2", "-L", BOOT_LABEL, partition(disk, 1))
    sh(MKE2FS, "-q", "-F", "-t", "ext4", "-L", DATA_LABEL, "-E", "lazy_itable_init=1,lazy_journal_init=1",
       partition(disk, 2))
    if uefi:
        sh(MKFS_FAT, "-F", "32", "-n", ESP_LABEL, partition(disk, 3))


@contextmanager
def mounted(device: str, where: Path, fstype: str, options: str = "rw") -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    # Debian's ext4 driver serves ext2 too; the maintenance image loads drivers on demand.
    for module in (("vfat", "nls_cp437", "nls_ascii") if fstype == "vfat" else ("crc32c_generic", "ext4")):
        subprocess.run(["modprobe", "-q", module], check=False)
    sh("mount", "-t", fstype, "-o", options, device, str(where))
    try:
        yield where
    finally:
        subprocess.run(["sync"], check=False)
        subprocess.run(["umount", str(where)], check=False)


def set_immutable(path: Path, on: bool) -> None:
    sh(CHATTR, "+i" if on else "-i", str(path))


@contextmanager
def image_root(image: Path, fmt: str, where: Path, nbd: str = "/dev/nbd1") -> Iterator[Path]:
    """Mount the root filesystem of a base image, read-only, through qemu-nbd."""
    subprocess.run(["modprobe", "-q", "nbd", "nbds_max=4", "max_part=0"], check=False)
    sh("qemu-nbd", "--read-only", f"--format={fmt}", f"--connect={nbd}", str(image))
    try:
        for _ in range(50):
            if Path(f"/sys/block/{Path(nbd).name}/size").read_text().strip() != "0":
                break
            time.sleep(0.1)
        with mounted(nbd, where, "ext4", "ro,noload") as root:
            yield root
    finally:
        subprocess.run(["qemu-nbd", "--disconnect", nbd], capture_output=True, check=False)


def install_bootloader(disk: str, boot: Path, config: str) -> None:
    """extlinux on partition 1, Syslinux's MBR code on the disk, partition 1 active."""
    tmp = boot / "extlinux.conf.tmp"
    tmp.write_text(config)
    os.replace(tmp, boot / "extlinux.conf")
    sh("extlinux", "--install", str(boot))
    mbr = MBR.read_bytes()[:440]
    with open(disk, "r+b") as fh:
        fh.write(mbr)
        fh.flush()
        os.fsync(fh.fileno())


def create_layer(data: Path, base_name: str, fmt: str) -> None:
    """A fresh, empty qcow2 overlay over the base: the host's differencing layer."""
    layer = data / "layer.qcow2"
    layer.unlink(missing_ok=True)
    # The backing path is relative, so the layer works wherever the partition is mounted.
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", f"images/{base_name}", "-F", fmt, "layer.qcow2",
       cwd=data)


def install_uefi_loader(disk: str, esp: Path, grub_config: str) -> str:
    """Debian's signed shim and GRUB on the EFI system partition (partition 3), GRUB's
    configuration where the signed GRUB reads it, and the firmware's boot entry, first in
    BootOrder. The same loader also goes to EFI/BOOT/BOOTX64.EFI, the path firmware boots
    from a disk it has no entry for (an entry lost, or a BootOrder rewritten): whatever the
    firmware's variables hold, the disk boots the host. Next to it goes shim's fallback
    (fbx64.efi), which makes the entry again from EFI/provisioner/BOOTX64.CSV when the
    firmware booted that path: firmware that lost its variables gets our entry back.
    Returns the entry's number."""
    for folder, loader in (("EFI/provisioner", "shimx64.efi"), ("EFI/BOOT", "BOOTX64.EFI")):
        (esp / folder).mkdir(parents=True, exist_ok=True)
        _replace(esp / folder / loader, SHIM.read_bytes())
        _replace(esp / folder / "grubx64.efi", GRUB.read_bytes())
    _replace(esp / "EFI/BOOT/fbx64.efi", FALLBACK.read_bytes())
    _replace(esp / "EFI/provisioner/BOOTX64.CSV",
             f"shimx64.efi,{BOOT_ENTRY},,the provisioner's host image\n".encode("utf-16-le"))
    (esp / "EFI/debian").mkdir(parents=True, exist_ok=True)
    _replace(esp / "EFI/debian/grub.cfg", grub_config.encode())
    return boot_entry(disk)


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def boot_entries(listing: str) -> dict[str, str]:
    """efibootmgr's Boot#### lines: number -> label."""
    entries = {}
    for line in listing.splitlines():
        if line.startswith("Boot") and len(line) > 9 and line[8] in "* " and line[4:8].isalnum():
            entries[line[4:8]] = line[9:].split("\t", 1)[0].strip()
    return entries


def boot_entry(disk: str) -> str:
    """One entry named "provisioner" for this disk's loader, first in BootOrder: entries of
    ours left by earlier deploys are removed first, so repeated deploys do not pile them up."""
    for number, label in boot_entries(sh(EFIBOOTMGR)).items():
        if label == BOOT_ENTRY:
            sh(EFIBOOTMGR, "-q", "-b", number, "-B")
    sh(EFIBOOTMGR, "-q", "-c", "-d", disk, "-p", "3", "-L", BOOT_ENTRY, "-l", "\\EFI\\provisioner\\shimx64.efi")
    listing = sh(EFIBOOTMGR)
    ours = [n for n, label in boot_entries(listing).items() if label == BOOT_ENTRY]
    order = next((line.split(":", 1)[1].strip().split(",") for line in listing.splitlines()
                  if line.startswith("BootOrder:")), [])
    if len(ours) != 1 or not order or order[0] != ours[0]:
        raise DiskError(f"the firmware did not keep the boot entry: {' | '.join(listing.splitlines()[:8])}")
    return ours[0]
