"""The deploy command: lay a host down on the local disk. The base image arrives once
(or is found already there, verified), is kept read-only, and gets a fresh differencing
layer; the node's identity goes next to it; the disk is made to boot on its own. Nothing
the next boot reads changes until the base has passed its checksum."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from . import disk, multicast
from .download import PartWriter, Transfer, fetch, verify
from .protocol import DeployArgs, DeployImage, DeployMulticast, DeployResult

LOG = logging.getLogger("agent")
Progress = Callable[[dict[str, Any]], None]


class DeployFailed(Exception):
    pass


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def extlinux_config(sha: str, kernel_args: str) -> str:
    short = sha[:16]
    return (f"# written by the provisioner agent at deploy time\nDEFAULT host\nPROMPT 0\nTIMEOUT 0\n"
            f"LABEL host\n  KERNEL /{short}/vmlinuz\n  INITRD /{short}/initrd.img\n"
            f"  APPEND {kernel_args} provisioner.base={sha}\n")


def grub_config(sha: str, kernel_args: str) -> str:
    """The signed GRUB's configuration on UEFI nodes: the same kernel, initramfs and command
    line as extlinux's on BIOS, found on provboot by its label."""
    short = sha[:16]
    return (f"# written by the provisioner agent at deploy time\nset timeout=0\n"
            f"search --no-floppy --label {disk.BOOT_LABEL} --set=root\n"
            f"linux /{short}/vmlinuz {kernel_args} provisioner.base={sha}\n"
            f"initrd /{short}/initrd.img\nboot\n")


class Deployer:
    def __init__(self, base_url: str, token: str | None, work: Path = Path("/run/provisioner-deploy"),
                 disk_path: str | None = None, uefi: bool | None = None,
                 netconf: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.work = work
        self.disk_path = disk_path
        self.uefi = Path("/sys/firmware/efi").exists() if uefi is None else uefi
        self.netconf = netconf or {}

    def run(self, args: DeployArgs, progress: Progress) -> DeployResult:
        try:
            return self._run(args, progress)
        except (disk.DiskError, OSError) as exc:
            raise DeployFailed(str(exc)) from exc

    def _run(self, args: DeployArgs, progress: Progress) -> DeployResult:
        times: dict[str, float] = {}
        started = time.monotonic()
        image = args["image"]
        sha, fmt = image["sha256"], image["format"]
        target = self.disk_path or disk.choose_disk()
        if not disk.has_layout(target, self.uefi):
            if args.get("no_transfer"):
                raise DeployFailed(f"{target} holds no host laid down by the provisioner: nothing to roll back")
            progress({"phase": "partitioning", "disk": target})
            disk.create_layout(target, uefi=self.uefi)
        times["layout"] = time.monotonic() - started
        with disk.mounted(disk.partition(target, 2), self.work / "data", "ext4") as data, \
                disk.mounted(disk.partition(target, 1), self.work / "boot", "ext2") as boot:
            images = data / "images"
            base_name = f"{sha}.{fmt}"
            t0 = time.monotonic()
            transfer, reused = self.lay_base(images, image, bool(args.get("no_transfer")), progress,
                                             offer=args.get("multicast"), mac=args["node"]["mac"])
            times["image"] = time.monotonic() - t0
            keep = {sha, *[k for k in args.get("keep", []) if k]}
            self._prune(images, boot, keep)
            t0 = time.monotonic()
            progress({"phase": "boot-files"})
            boot_dir = boot / sha[:16]
            if not (boot_dir / "vmlinuz").exists() or not (boot_dir / "initrd.img").exists():
                boot_dir.mkdir(exist_ok=True)
                with disk.image_root(images / base_name, fmt, self.work / "base") as root:
                    for name in ("vmlinuz", "initrd.img"):
                        src = root / "boot" / name
                        if not src.exists():
                            raise DeployFailed(f"the image has no /boot/{name}: not a host image")
                        shutil.copyfile(src, boot_dir / name)
            times["boot_files"] = time.monotonic() - t0
            t0 = time.monotonic()
            progress({"phase": "layer"})
            disk.create_layer(data, base_name, fmt)
            self._identity(data, args, self.netconf, self.base_url)
            _write(data / "state", f"base={sha}\nformat={fmt}\nprevious={args.get('previous') or ''}\n")
            entry = self._boot_loader(target, boot, sha, args.get("kernel_args", ""))
            times["layer_and_boot"] = time.monotonic() - t0
        times["total"] = time.monotonic() - started
        LOG.info("agent: deployed base %s on %s (%s, %d bytes transferred) in %.1fs", sha[:16], target,
                 "reused" if reused else "downloaded", transfer.total, times["total"])
        result: DeployResult = {"disk": target, "base_sha256": sha, "transferred_bytes": transfer.total,
                                "multicast_bytes": transfer.multicast, "http_bytes": transfer.http,
                                "reused": reused, "seconds": {k: round(v, 2) for k, v in times.items()}}
        if entry:
            result["boot_entry"] = entry
        return result

    def _boot_loader(self, target: str, boot: Path, sha: str, kernel_args: str) -> str | None:
        """BIOS: extlinux on provboot and Syslinux's MBR code. UEFI: the signed shim and GRUB
        on the EFI system partition and the firmware's boot entry (its number returned)."""
        if not self.uefi:
            disk.install_bootloader(target, boot, extlinux_config(sha, kernel_args))
            return None
        with disk.mounted(disk.partition(target, 3), self.work / "esp", "vfat") as esp:
            return disk.install_uefi_loader(target, esp, grub_config(sha, kernel_args))

    def lay_base(self, images: Path, image: DeployImage, no_transfer: bool, progress: Progress,
                 offer: DeployMulticast | None = None, mac: str = "") -> tuple[Transfer, bool]:
        """The base on the data partition, verified, read-only and immutable: kept if the
        disk holds it intact, else received (multicast first when offered, HTTP for the
        rest). (how it arrived, whether it was reused)"""
        sha, fmt = image["sha256"], image["format"]
        images.mkdir(exist_ok=True)
        base = images / f"{sha}.{fmt}"
        if base.exists():
            progress({"phase": "verifying"})
            if verify(base, sha):
                return Transfer(), True
            LOG.warning("agent: base %s on disk fails its checksum; replacing it", sha[:16])
            disk.set_immutable(base, False)
            base.unlink()
        if no_transfer:
            raise DeployFailed(f"base {sha[:16]} is not on this disk: a rollback never downloads")
        size = int(image["size"])
        receive = None
        interface = multicast.interface_for(mac) if offer and mac else None
        if offer and interface is None:
            LOG.warning("agent: no interface with MAC %s for the multicast session: HTTP", mac)
        elif offer and interface:
            def receive(writer: PartWriter) -> int:
                def waiting() -> None:
                    progress({"phase": "waiting", "path": "multicast", "session": offer["session"]})
                waiting()
                return multicast.receive(offer, interface, writer, log=self.work / "udp-receiver.log",
                                         waiting=waiting)
        transfer = fetch(self.base_url + image["url"], base, sha256=sha, size=size, token=self.token,
                         multicast=receive,
                         progress=lambda done, total, path: progress({"phase": "writing", "path": path,
                                                                      "bytes": done, "total": total}))
        os.chmod(base, 0o444)
        disk.set_immutable(base, True)
        return transfer, False

    @staticmethod
    def _prune(images: Path, boot: Path, keep: set[str]) -> None:
        """Drop bases (and their boot files) that are neither the new one nor kept."""
        for path in images.iterdir():
            sha = path.name.split(".", 1)[0]
            if sha in keep:
                continue
            if path.suffix != ".part":
                disk.set_immutable(path, False)
            path.unlink()
            LOG.info("agent: removed old base %s", path.name)
        for entry in boot.iterdir():
            if entry.is_dir() and len(entry.name) == 16 and not any(k.startswith(entry.name) for k in keep):
                shutil.rmtree(entry)

    @staticmethod
    def _identity(data: Path, args: DeployArgs, netconf: dict[str, str], api: str) -> None:
        """What makes this host itself: name, address, SSH keys, the host agent's credential."""
        node = data / "node"
        node.mkdir(mode=0o700, exist_ok=True)
        info = {**netconf, "name": args["node"]["name"], "mac": args["node"]["mac"]}
        _write(node / "hostname", info["name"] + "\n")
        _write(node / "network", "".join(f"{k.upper()}={info.get(k) or ''}\n"
                                         for k in ("mac", "ip", "netmask", "gateway")))
        ssh = args.get("ssh") or {}
        if ssh.get("host_key"):
            _write(node / "ssh_host_ed25519_key", ssh["host_key"], 0o600)
            _write(node / "ssh_host_ed25519_key.pub", ssh["host_key_pub"] + "\n")
        _write(node / "authorized_keys", "".join(k.strip() + "\n" for k in ssh.get("authorized_keys", [])), 0o600)
        host_agent = dict(args["host_agent"])
        host_agent["api"] = host_agent.get("api") or api
        _write(node / "agent.json", json.dumps(host_agent), 0o600)
