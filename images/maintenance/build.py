#!/usr/bin/env python3
"""Build the maintenance image: the Debian kernel and an initramfs holding busybox,
Debian's python3.11 (only the standard-library modules the agent imports), dmidecode,
drivers for virtio and common server NICs and disks, and the agent.

Everything comes from installed Debian packages, so the build needs no network. It is
reproducible (sorted cpio, fixed times and owners, deterministic compression, hash-based
.pyc) and cached: the output is rebuilt only when an input changes (the recipe, these
scripts, the agent's code, or a package version).

    sudo python3 images/maintenance/build.py --out build/boot/maintenance
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from rootfs import (REPO, BuildError, add_binaries, add_libs, add_modules, add_python,  # noqa: E402
                    cache_key, cached_manifest, check_agent, copy_file, cpio_archive, kernel_version,
                    normalize_tree, package_versions, save_manifest, sha256_file)


def build(out: Path, force: bool = False) -> dict:
    if os.geteuid() != 0:
        raise BuildError("building the maintenance image needs root (device nodes, chroot check)")
    recipe = json.loads((HERE / "recipe.json").read_text())
    kver = kernel_version()
    versions = package_versions(recipe["packages"] + [f"linux-image-{kver}"])
    key = cache_key([HERE / "recipe.json", HERE / "init", HERE / "udhcpc.script", Path(__file__)],
                    kver, versions)
    cached = None if force else cached_manifest(out, key, ["vmlinuz", "initrd.img"])
    if cached:
        return cached
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="maint-") as tmp:
        root = Path(tmp) / "root"
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "run", "tmp", "etc", "root",
                  "opt/provisioner", "var/run"):
            (root / d).mkdir(parents=True, exist_ok=True)
        os.mknod(root / "dev/console", 0o600 | stat.S_IFCHR, os.makedev(5, 1))
        os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        shutil.copy2(HERE / "init", root / "init")
        shutil.copy2(HERE / "udhcpc.script", root / "etc/udhcpc.script")
        os.chmod(root / "init", 0o755)
        os.chmod(root / "etc/udhcpc.script", 0o755)
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "etc/group").write_text("root:x:0:\n")
        (root / "etc/mtab").symlink_to("/proc/mounts")  # mke2fs asks it what is mounted
        # Binaries, the agent on Debian's python, the libraries both need, and drivers.
        elf = add_binaries(root, recipe["binaries"])
        elf += add_python(root, recipe["python_extra_modules"])
        for src in recipe.get("files", []):
            copy_file(Path(src), root)
        add_libs(root, elf)
        mods = add_modules(root, kver, recipe["kernel_modules"])
        check_agent(root)
        normalize_tree(root, epoch)
        cpio = cpio_archive(root)
        initrd = subprocess.run(["zstd", "-q", "-19", "-T1", "-c"], input=cpio, check=True,
                                capture_output=True).stdout
        tmp_initrd = out / "initrd.img.tmp"
        tmp_initrd.write_bytes(initrd)
        tmp_kernel = out / "vmlinuz.tmp"
        shutil.copyfile(f"/boot/vmlinuz-{kver}", tmp_kernel)
        os.chmod(tmp_kernel, 0o644)
        os.chmod(tmp_initrd, 0o644)
        os.replace(tmp_kernel, out / "vmlinuz")
        os.replace(tmp_initrd, out / "initrd.img")
    manifest = {
        "cache_key": key, "kernel": kver, "packages": versions, "modules": mods,
        "files": {name: {"sha256": sha256_file(out / name),
                         "bytes": (out / name).stat().st_size} for name in ("vmlinuz", "initrd.img")},
        "uncompressed_initrd_bytes": len(cpio),
    }
    return save_manifest(out, manifest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "build/boot/maintenance"))
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    args = parser.parse_args()
    try:
        manifest = build(Path(args.out), force=args.force)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    files = manifest["files"]
    print(f"maintenance image {'(cached) ' if manifest['cached'] else ''}in {args.out}: kernel {manifest['kernel']}, "
          f"vmlinuz {files['vmlinuz']['bytes'] >> 20} MiB, initrd.img {files['initrd.img']['bytes'] >> 20} MiB, "
          f"initrd sha256 {files['initrd.img']['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
