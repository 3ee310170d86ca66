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
and over multicast, where udpcast sets the pace, in two network namespaces on a bridge:
  multicast-agent    the agent's path (Deployer.lay_base with a session offered):
                     udp-receiver's stdout piped to the agent, hashed, into the base file
  multicast-udpcast  udp-receiver writing the raw disk itself (--nosync, then sync): the
                     same session with nothing of ours on the receiving side
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
from provisioner.agent import multicast as agent_multicast
from provisioner.agent.deploy import Deployer
from provisioner.boot.udpcast import SenderOptions, sender_command
from tests.functional.test_multicast import ADDRESS, OFFER, Segment

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
    names = ("provisioner", "provisioner-first", "dd", "qemu-img", "multicast-agent", "multicast-udpcast")
    disks = {name: LoopDisk(work / f"{name}.disk") for name in names}
    transferred: list[int] = []
    segment = Segment(receivers=1)
    receiver_ns = segment.receiver_ns[0]

    def send() -> subprocess.Popen:
        opts = SenderOptions(interface="br0", ttl=1, min_receivers=1, max_wait=5, max_bitrate="2000m",
                             start_timeout=30)
        return subprocess.Popen(["ip", "netns", "exec", segment.sender_ns,
                                 *sender_command("udp-sender", served, ADDRESS, opts)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def multicast_agent(dev: str) -> None:
        sender = send()
        plain_command, plain_interface = agent_multicast.receiver_command, agent_multicast.interface_for
        agent_multicast.receiver_command = lambda offer, iface, exe="udp-receiver": [  # type: ignore[assignment]
            "ip", "netns", "exec", receiver_ns, *plain_command(offer, iface, exe)]
        agent_multicast.interface_for = lambda mac, sys_net=None: "eth0"  # type: ignore[assignment]
        try:
            with disk.mounted(disk.partition(dev, 2), work / "mnt/data", "ext4") as data:
                deployer = Deployer(f"http://127.0.0.1:{http_port}", None, disk_path=dev, uefi=False, work=work)
                moved, reused = deployer.lay_base(data / "images", spec, False, lambda doc: None,
                                                  offer=OFFER, mac="52:54:00:00:00:01")  # type: ignore[arg-type]
                assert not reused and moved.multicast == size, moved
        finally:
            agent_multicast.receiver_command, agent_multicast.interface_for = plain_command, plain_interface
            sender.wait(60)

    def multicast_udpcast(dev: str) -> None:
        sender = send()
        subprocess.run(["ip", "netns", "exec", receiver_ns, "udp-receiver", "--file", dev, "--nosync", "--nokbd",
                        "--interface", "eth0", "--portbase", str(ADDRESS.portbase), "--mcast-rdv-address",
                        ADDRESS.rendezvous, "--start-timeout", "30"], check=True, capture_output=True)
        subprocess.run(["sync"], check=True)
        sender.wait(60)

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
        laid = name in ("provisioner", "multicast-agent")
        if not laid or not disk.has_layout(target.dev):
            target.wipe()
            if laid:
                disk.create_layout(target.dev)
            return
        with disk.mounted(disk.partition(target.dev, 2), work / "mnt/data", "ext4") as data:
            for old in (data / "images").glob("*"):
                disk.set_immutable(old, False)
                old.unlink()

    sides: dict[str, Callable[[str], None]] = {"provisioner": lay, "provisioner-first": first, "dd": dd,
                                                "qemu-img": qemu_img, "multicast-agent": multicast_agent,
                                                "multicast-udpcast": multicast_udpcast}
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
        segment.close()
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
            "multicast_agent_ratio_vs_udpcast": round(mbps["multicast-agent"] / mbps["multicast-udpcast"], 2),
            "bytes_transferred": transferred[-1]}
