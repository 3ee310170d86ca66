"""The node's disk as the deploy lays it out (BIOS, MBR):

    partition 1  provboot (ext2)   extlinux, and each kept base's kernel and initramfs
    partition 2  provdata (ext4)   images/<sha256>.<format>   read-only bases (immutable)
                                   layer.qcow2                the differencing layer
                                   state, node/               which base; the node's identity

Everything here shells out to the tools in the maintenance image (sfdisk, mke2fs,
extlinux, qemu-img, qemu-nbd, chattr) and raises DiskError with their reason."""

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
MBR = Path("/usr/lib/EXTLINUX/mbr.bin")
# Full paths: the image's busybox has applets of the same names that take other options.
MKE2FS = "/usr/sbin/mke2fs"
SFDISK = "/usr/sbin/sfdisk"
CHATTR = "/usr/bin/chattr"
PARTX = "/usr/bin/partx"


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


def has_layout(disk: str) -> bool:
    return label_of(partition(disk, 1)) == BOOT_LABEL and label_of(partition(disk, 2)) == DATA_LABEL


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


def create_layout(disk: str, boot_mib: int = 128) -> None:
    """Partition and format the disk (everything on it is lost)."""
    LOG.info("agent: partitioning %s (provboot %d MiB, provdata the rest)", disk, boot_mib)
    script = f"label: dos\n,{boot_mib}MiB,L,*\n,,L\n"
    proc = subprocess.run([SFDISK, "--quiet", "--wipe", "always", disk], input=script,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise DiskError(f"sfdisk {disk}: {proc.stderr.strip()}")
    for n in (1, 2):
        wait_for_partition(partition(disk, n), disk)
    sh(MKE2FS, "-q", "-F", "-t", "ext2", "-L", BOOT_LABEL, partition(disk, 1))
    sh(MKE2FS, "-q", "-F", "-t", "ext4", "-L", DATA_LABEL, "-E", "lazy_itable_init=1,lazy_journal_init=1",
       partition(disk, 2))


@contextmanager
def mounted(device: str, where: Path, fstype: str, options: str = "rw") -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    # Debian's ext4 driver serves ext2 too; the maintenance image loads drivers on demand.
    for module in ("crc32c_generic", "ext4"):
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
