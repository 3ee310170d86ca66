"""Lay-down: the agent putting a base image on a disk, vs `dd` and `qemu-img convert`
writing the same image to the same kind of disk, side by side in the same run.

Each side gets its own loop device on a sparse file in the same directory (the same
kind of disk) and must end with the bytes on that disk (synced):
  provisioner  the agent's own code on a disk that has its partitions (every reimage
               after the first): mount the data partition, download the image from our
               daemon over loopback HTTP (the same file-sending path as the agents'
               route, sendfile), hash it as it arrives (on its own thread), fsync,
               verify, make it read-only and immutable (Deployer.lay_base), unmount
  provisioner-first  the same on an empty disk, partitioning and formatting it first
  dd           dd if=IMAGE of=DISK bs=4M conv=fsync: the image's bytes, nothing else
  qemu-img     qemu-img convert -n -O raw IMAGE DISK, then sync: the classic way
               (Ironic's), expanding the image to its virtual size on the disk
Throughput is the image file's size over the wall time. The boot files, the layer and
the boot loader need qemu-nbd (a kernel module this bench machine may lack); the lab
measures them inside a real node (the deploy command's own timings, bench `reimage`)."""

from __future__ import annotations

import hashlib
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

from provisioner.agent import disk
from provisioner.agent.deploy import Deployer

DISK_BYTES = 4 << 30


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class LoopDisk:
    def __init__(self, backing: Path) -> None:
        with backing.open("wb") as fh:
            fh.truncate(DISK_BYTES)
        self.backing = backing
        self.dev = subprocess.run(["losetup", "--find", "--show", "--partscan", str(backing)], check=True,
                                  capture_output=True, text=True).stdout.strip()

    def wipe(self) -> None:
        """Back to an empty disk: no partition table, no filesystem, nothing cached."""
        subprocess.run(["wipefs", "--all", "--force", self.dev], check=True, capture_output=True)
        subprocess.run(["blkdiscard", "--force", self.dev], check=False, capture_output=True)
        subprocess.run(["blockdev", "--rereadpt", self.dev], check=False, capture_output=True)
        subprocess.run(["sync"], check=True)

    def close(self) -> None:
        subprocess.run(["losetup", "--detach", self.dev], check=False, capture_output=True)
        self.backing.unlink(missing_ok=True)


def bench_laydown(work: Path, image: Path, servers, http_port: int, rounds: int) -> dict:
    artifacts = work / "artifacts"
    (artifacts / "maintenance").mkdir(parents=True)
    served = artifacts / "maintenance" / "base.qcow2"
    shutil.copyfile(image, served)
    size, sha = served.stat().st_size, _sha256(served)
    servers.ours(artifacts)
    spec = {"sha256": sha, "format": "qcow2", "size": size, "url": "/boot/maintenance/base.qcow2"}
    names = ("provisioner", "provisioner-first", "dd", "qemu-img")
    disks = {name: LoopDisk(work / f"{name}.disk") for name in names}
    transferred: list[int] = []

    def lay(dev: str) -> None:
        with disk.mounted(disk.partition(dev, 2), work / "mnt/data", "ext4") as data:
            deployer = Deployer(f"http://127.0.0.1:{http_port}", None, disk_path=dev, uefi=False)
            moved, reused = deployer.lay_base(data / "images", spec, False, lambda doc: None)
            assert not reused and moved.total == size
            transferred.append(moved.total)

    def first(dev: str) -> None:
        disk.create_layout(dev)
        lay(dev)

    def dd(dev: str) -> None:
        subprocess.run(["dd", f"if={served}", f"of={dev}", "bs=4M", "conv=fsync", "status=none"], check=True)

    def qemu_img(dev: str) -> None:
        subprocess.run(["qemu-img", "convert", "-n", "-f", "qcow2", "-O", "raw", str(served), dev], check=True)
        subprocess.run(["sync"], check=True)

    def prepare(name: str) -> None:
        """An empty disk for each side, except that 'provisioner' (every reimage after
        the first) keeps its partitions and loses only the base."""
        target = disks[name]
        if name != "provisioner" or not disk.has_layout(target.dev):
            target.wipe()
            if name == "provisioner":
                disk.create_layout(target.dev)
            return
        with disk.mounted(disk.partition(target.dev, 2), work / "mnt/data", "ext4") as data:
            for old in (data / "images").glob("*"):
                disk.set_immutable(old, False)
                old.unlink()

    sides: dict[str, Callable[[str], None]] = {"provisioner": lay, "provisioner-first": first, "dd": dd,
                                                "qemu-img": qemu_img}
    walls: dict[str, list[float]] = {k: [] for k in sides}
    try:
        for _ in range(rounds):
            for name, run in sides.items():  # interleaved so all see the same machine
                prepare(name)
                subprocess.run(["sync"], check=True)
                start = time.monotonic()
                run(disks[name].dev)
                walls[name].append(time.monotonic() - start)
    finally:
        for target in disks.values():
            target.close()
    med = {k: statistics.median(v) for k, v in walls.items()}
    mbps = {k: size / 1e6 / v for k, v in med.items()}
    return {"image": image.name, "image_bytes": size, "disk_bytes": DISK_BYTES, "rounds": rounds,
            "seconds": {k: round(v, 2) for k, v in med.items()},
            "spread_s": {k: [round(min(v), 2), round(max(v), 2)] for k, v in walls.items()},
            "rounds_s": {k: [round(x, 2) for x in v] for k, v in walls.items()},
            "MBps": {k: round(v) for k, v in mbps.items()},
            "ratio_vs_dd": round(mbps["provisioner"] / mbps["dd"], 2),
            # each round's provisioner against the same round's dd: the ratio's own spread
            "ratio_vs_dd_by_round": sorted(round(d / p, 2) for p, d in zip(walls["provisioner"], walls["dd"])),
            "ratio_vs_qemu_img": round(mbps["provisioner"] / mbps["qemu-img"], 2),
            "first_deploy_ratio_vs_dd": round(mbps["provisioner-first"] / mbps["dd"], 2),
            "bytes_transferred": transferred[-1]}
