#!/usr/bin/env python3
"""Build the test guest image: a disk that boots on its own (MBR, extlinux on an ext2
boot partition with the Debian kernel and a small initramfs, an ext4 root), with
busybox init and qemu-guest-agent. It reads its config drive (cloud-init NoCloud,
label cidata) for its name and keeps the user data; the provisioner sees it ready when
its guest agent answers through libvirt. Small and quick to boot under emulation.

Everything comes from installed Debian packages, so the build needs no network. It is
cached: rebuilt only when an input changes.

    sudo python3 images/guest/build.py --out build/images/guest
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))
from provisioner.agent import disk  # noqa: E402
from rootfs import (REPO, BuildError, add_binaries, add_libs, add_modules, busybox_links,  # noqa: E402
                    cache_key, cached_manifest, kernel_version, normalize_tree, package_versions, run,
                    save_manifest, sha256_file, small_initramfs)

INPUTS = [HERE / "recipe.json", HERE / "init", *sorted((HERE / "etc").iterdir())]
MBR = Path("/usr/lib/EXTLINUX/mbr.bin")
EXTLINUX_CONF = """# provisioner guest image
DEFAULT guest
PROMPT 0
TIMEOUT 0
LABEL guest
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND console=ttyS0,115200 quiet panic=10
"""


def root_tree(recipe: dict, kver: str, root: Path) -> int:
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "run", "tmp", "root", "var/lib/guest",
              "var/run", "etc/init.d"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.mknod(root / "dev/console", 0o600 | stat.S_IFCHR, os.makedev(5, 1))
    os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    add_libs(root, add_binaries(root, recipe["binaries"]))
    modules = add_modules(root, kver, recipe["kernel_modules"])
    busybox_links(root)
    etc = root / "etc"
    shutil.copy2(HERE / "etc/inittab", etc / "inittab")
    for name in ("rcS", "guest-agent"):
        shutil.copy2(HERE / "etc" / name, etc / "init.d" / name)
        os.chmod(etc / "init.d" / name, 0o755)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "hostname").write_text("guest\n")
    (etc / "os-release").write_text('NAME="provisioner guest"\nID=provisioner-guest\nID_LIKE=debian\n')
    return modules


@contextmanager
def loop_partitions(disk_file: Path) -> Iterator[tuple[str, str]]:
    dev = run("losetup", "--find", "--show", "--partscan", str(disk_file)).strip()
    try:
        parts = (disk.partition(dev, 1), disk.partition(dev, 2))
        for part in parts:
            disk.wait_for_partition(part, dev)  # with the agent's partx fallback
        yield parts
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)


def make_disk(recipe: dict, boot: Path, root: Path, raw: Path, mnt: Path) -> None:
    with raw.open("wb") as fh:
        fh.truncate(recipe["disk_mib"] << 20)
    subprocess.run(["sfdisk", "--quiet", str(raw)], input=f"label: dos\n,{recipe['boot_mib']}MiB,L,*\n,,L\n",
                   text=True, check=True)
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": "1"}
    with loop_partitions(raw) as (p1, p2):
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-L", "guestboot", "-d", str(boot), p1], check=True,
                       env=env)
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "guestroot", "-E", "root_owner=0:0",
                        "-d", str(root), p2], check=True, env=env)
        mnt.mkdir(parents=True, exist_ok=True)
        run("mount", "-t", "ext2", p1, str(mnt))
        try:
            run("extlinux", "--install", str(mnt))
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
    with raw.open("r+b") as fh:
        fh.write(MBR.read_bytes()[:440])


def build(out: Path, force: bool = False) -> dict:
    if os.geteuid() != 0:
        raise BuildError("building the guest image needs root (device nodes, loop devices)")
    recipe = json.loads((HERE / "recipe.json").read_text())
    kver = kernel_version()
    versions = package_versions(recipe["packages"] + [f"linux-image-{kver}"])
    key = cache_key(INPUTS + [Path(__file__)], kver, versions)
    cached = None if force else cached_manifest(out, key, ["guest.qcow2"])
    if cached:
        return cached
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="guest-", dir=out) as tmp:
        boot, root = Path(tmp) / "boot", Path(tmp) / "root"
        boot.mkdir()
        modules = root_tree(recipe, kver, root)
        shutil.copyfile(f"/boot/vmlinuz-{kver}", boot / "vmlinuz")
        small_initramfs(HERE / "init", ["bin", "proc", "sys", "newroot"], recipe["initramfs"]["binaries"],
                        recipe["initramfs"]["kernel_modules"], kver, boot / "initrd.img")
        (boot / "extlinux.conf").write_text(EXTLINUX_CONF)
        normalize_tree(boot, 0)
        normalize_tree(root, 0)
        raw = Path(tmp) / "disk.raw"
        make_disk(recipe, boot, root, raw, Path(tmp) / "mnt")
        tmp_image = out / "guest.qcow2.tmp"
        run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(tmp_image))
        os.replace(tmp_image, out / "guest.qcow2")
    image = out / "guest.qcow2"
    manifest = {"cache_key": key, "kernel": kver, "packages": versions, "modules": modules,
                "image": {"file": "guest.qcow2", "format": "qcow2", "bytes": image.stat().st_size,
                          "sha256": sha256_file(image), "virtual_mib": recipe["disk_mib"]}}
    return save_manifest(out, manifest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "build/images/guest"))
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    args = parser.parse_args()
    try:
        manifest = build(Path(args.out), force=args.force)
    except (BuildError, disk.DiskError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    img = manifest["image"]
    print(f"guest image {'(cached) ' if manifest['cached'] else ''}in {args.out}/guest.qcow2: kernel "
          f"{manifest['kernel']}, {img['bytes'] >> 20} MiB on disk, {img['virtual_mib']} MiB virtual, "
          f"sha256 {img['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
