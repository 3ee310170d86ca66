#!/usr/bin/env python3
"""Build the host OS image: a root filesystem (ext4) in a qcow2 file, holding the Debian
kernel and a small initramfs that boots the root through a differencing layer, busybox
init, openssh-server, qemu/KVM, libvirtd, Debian's python3.11 and the host agent.

Everything comes from installed Debian packages, so the build needs no network. It is
cached: rebuilt only when an input changes (this recipe, these scripts, the agent's code,
or a package version). --import hands the result to a running daemon's catalog.

    sudo python3 images/host/build.py --out build/images/host [--import]
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
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from rootfs import (REPO, BuildError, add_binaries, add_libs, add_modules, add_python,  # noqa: E402
                    busybox_links, cache_key, cached_manifest, check_agent, copy_file, kernel_version,
                    normalize_tree, package_versions, run, save_manifest, sha256_file, small_initramfs)

PASSWD = """root:x:0:0:root:/root:/bin/sh
sshd:x:100:65534:sshd:/run/sshd:/bin/false
libvirt-qemu:x:64055:108:libvirt qemu:/var/lib/libvirt:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = "root:x:0:\nkvm:x:104:libvirt-qemu\nlibvirt:x:107:\nlibvirt-qemu:x:108:\nnogroup:x:65534:\n"
# '*': no password can log in, but the account is not locked, so SSH keys work.
SHADOW = "root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\nlibvirt-qemu:*:19000:0:99999:7:::\n"
INPUTS = [HERE / "recipe.json", HERE / "init", *sorted((HERE / "etc").iterdir())]


def skeleton(root: Path) -> None:
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "run", "tmp", "etc", "root",
              "opt/provisioner", "var/log", "var/lib/provisioner/disk", "var/lib/libvirt", "boot"):
        (root / d).mkdir(parents=True, exist_ok=True)
    # Debian's clients (virsh, virt-ssh-helper, a remote qemu+ssh connection) look for
    # /var/run/libvirt/libvirt-sock; libvirtd makes it in /run.
    (root / "var/run").symlink_to("../run")
    os.mknod(root / "dev/console", 0o600 | stat.S_IFCHR, os.makedev(5, 1))
    os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))


def build(out: Path, force: bool = False) -> dict:
    if os.geteuid() != 0:
        raise BuildError("building the host image needs root (device nodes, file owners)")
    recipe = json.loads((HERE / "recipe.json").read_text())
    kver = kernel_version()
    versions = package_versions(recipe["packages"] + [f"linux-image-{kver}"])
    key = cache_key(INPUTS + [Path(__file__)], kver, versions)
    cached = None if force else cached_manifest(out, key, ["host.qcow2"])
    if cached:
        return cached
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="host-", dir=out) as tmp:
        root = Path(tmp) / "root"
        skeleton(root)
        elf = add_binaries(root, recipe["binaries"])
        elf += add_python(root, recipe["python_extra_modules"])
        for tree in recipe["trees"]:
            dest = root / tree.lstrip("/")
            shutil.copytree(tree, dest, symlinks=False, dirs_exist_ok=True)
            elf += [Path(tree) / p.relative_to(dest) for p in dest.rglob("*.so")]
        for src in recipe["files"]:
            copy_file(Path(src), root)
        add_libs(root, elf)
        mods = add_modules(root, kver, recipe["kernel_modules"])
        busybox_links(root)
        (root / "sbin/init").unlink(missing_ok=True)
        (root / "sbin/init").symlink_to("/bin/busybox")
        etc = root / "etc"
        (etc / "passwd").write_text(PASSWD)
        (etc / "group").write_text(GROUP)
        (etc / "shadow").write_text(SHADOW)
        os.chmod(etc / "shadow", 0o600)
        (etc / "hostname").write_text("provisioner-host\n")
        (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nshadow: files\nhosts: files\n")
        (etc / "hosts").write_text("127.0.0.1 localhost\n")
        (etc / "mtab").symlink_to("/proc/mounts")
        (etc / "ssh").mkdir(exist_ok=True)
        shutil.copy2(HERE / "etc/sshd_config", etc / "ssh/sshd_config")
        shutil.copy2(HERE / "etc/inittab", etc / "inittab")
        (etc / "init.d").mkdir(exist_ok=True)
        for name in ("rcS", "rcK", "host-agent"):
            shutil.copy2(HERE / "etc" / name, etc / "init.d" / name)
            os.chmod(etc / "init.d" / name, 0o755)
        (root / "etc/os-release").write_text('NAME="provisioner host"\nID=provisioner-host\nID_LIKE=debian\n'
                                             f'VERSION_ID="{key[:12]}"\n')
        check_agent(root)
        shutil.copyfile(f"/boot/vmlinuz-{kver}", root / "boot/vmlinuz")
        small_initramfs(HERE / "init", ["bin", "proc", "sys", "data", "newroot", "run"],
                        recipe["initramfs"]["binaries"], recipe["initramfs"]["kernel_modules"], kver,
                        root / "boot/initrd.img")
        normalize_tree(root, 0)
        raw = Path(tmp) / "root.ext4"
        fs_uuid = str(uuid.UUID(key[:32]))
        subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "hostroot", "-U", fs_uuid,
                        "-E", f"root_owner=0:0,hash_seed={fs_uuid}", "-d", str(root), str(raw),
                        f"{recipe['root_size_mib']}M"], check=True, env={**os.environ, "E2FSPROGS_FAKE_TIME": "1"})
        tmp_image = out / "host.qcow2.tmp"
        run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(tmp_image))
        os.replace(tmp_image, out / "host.qcow2")
    image = out / "host.qcow2"
    manifest = {"cache_key": key, "kernel": kver, "packages": versions, "modules": mods,
                "image": {"file": "host.qcow2", "format": "qcow2", "bytes": image.stat().st_size,
                          "sha256": sha256_file(image), "virtual_mib": recipe["root_size_mib"]}}
    return save_manifest(out, manifest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "build/images/host"))
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    parser.add_argument("--import", dest="do_import", action="store_true",
                        help="import the image into the running daemon's catalog as 'host'")
    parser.add_argument("--name", default="host", help="catalog name for --import")
    args = parser.parse_args()
    try:
        manifest = build(Path(args.out), force=args.force)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    img = manifest["image"]
    print(f"host image {'(cached) ' if manifest['cached'] else ''}in {args.out}/host.qcow2: kernel "
          f"{manifest['kernel']}, {img['bytes'] >> 20} MiB on disk, {img['virtual_mib']} MiB virtual, "
          f"sha256 {img['sha256'][:16]}")
    if args.do_import:
        return subprocess.call([sys.executable, "-m", "provisioner", "image", "import",
                                str(Path(args.out) / "host.qcow2"), "--name", args.name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
