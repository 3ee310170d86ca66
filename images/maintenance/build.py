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
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
AGENT_FILES = sorted([REPO / "provisioner/__init__.py", *(REPO / "provisioner/agent").glob("*.py")])
PYTHON = "/usr/bin/python3.11"
STDLIB = Path("/usr/lib/python3.11")


class BuildError(Exception):
    pass


def run(*cmd: str, **kw: object) -> str:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout  # type: ignore[call-overload]
    except FileNotFoundError as exc:
        raise BuildError(f"{cmd[0]} is not installed (run 'make setup')") from exc
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"{' '.join(cmd)} failed: {exc.stderr.strip()}") from exc


def kernel_version() -> str:
    versions = [p.name for p in Path("/lib/modules").iterdir() if Path(f"/boot/vmlinuz-{p.name}").exists()]
    if not versions:
        raise BuildError("no kernel with modules found: install Debian's linux-image-amd64 ('make setup')")
    return sorted(versions, key=lambda v: [int(x) if x.isdigit() else x for x in re.split(r"[.-]", v)])[-1]


def package_versions(packages: list[str]) -> dict[str, str]:
    out = {}
    for pkg in packages:
        try:
            out[pkg] = run("dpkg-query", "-W", "-f", "${Version}", pkg)
        except BuildError as exc:
            raise BuildError(f"Debian package {pkg} is not installed ('make setup')") from exc
    return out


def cache_key(recipe: dict, kver: str, versions: dict[str, str]) -> str:
    h = hashlib.sha256()
    for path in [HERE / "recipe.json", HERE / "init", HERE / "udhcpc.script", Path(__file__), *AGENT_FILES]:
        h.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    h.update(json.dumps({"kernel": kver, "packages": versions}, sort_keys=True).encode())
    return h.hexdigest()


def copy_file(src: Path, root: Path, dest: str | None = None) -> None:
    target = root / (dest or str(src)).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src.resolve(), target)


def shared_libs(paths: list[Path]) -> set[str]:
    libs: set[str] = set()
    for path in paths:
        proc = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            continue  # static binaries
        for line in proc.stdout.splitlines():
            match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if match:
                libs.add(match.group(1))
    return libs


FINDER = r"""
import json, modulefinder, pkgutil, sys
repo, extras = sys.argv[1], json.loads(sys.argv[2])
finder = modulefinder.ModuleFinder(path=[repo] + sys.path[1:])
finder.import_hook("provisioner.agent.main")
finder.import_hook("provisioner.agent.__main__")
finder.import_hook("runpy")
for name in extras:
    if name.endswith(".*"):
        pkg = __import__(name[:-2], fromlist=["_"])
        finder.import_hook(name[:-2])
        for mod in pkgutil.iter_modules(pkg.__path__):
            finder.import_hook(name[:-2] + "." + mod.name)
    else:
        finder.import_hook(name)
print(json.dumps(sorted({m.__file__ for m in finder.modules.values() if m.__file__})))
"""


def python_files(extras: list[str]) -> list[Path]:
    files = json.loads(run(PYTHON, "-I", "-S", "-c", FINDER, str(REPO), json.dumps(extras)))
    return [Path(f) for f in files if f.startswith(str(STDLIB) + "/")]


def kernel_modules(kver: str, names: list[str]) -> list[str]:
    """Relative paths of the modules and everything they depend on."""
    base = Path("/lib/modules") / kver
    deps: dict[str, list[str]] = {}
    for line in (base / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.split(".ko")[0].replace("-", "_"): m for m in deps}
    wanted: set[str] = set()
    todo = []
    for name in names:
        rel = by_name.get(name.replace("-", "_"))
        if rel is None:
            continue  # built into this kernel, or not built for it
        todo.append(rel)
    while todo:
        rel = todo.pop()
        if rel not in wanted:
            wanted.add(rel)
            todo.extend(deps.get(rel, []))
    return sorted(wanted)


def normalize_tree(root: Path, epoch: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                os.chmod(path, 0o755)
        for name in [*dirnames, *filenames]:
            os.utime(Path(dirpath) / name, (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))


def build(out: Path, force: bool = False) -> dict:
    if os.geteuid() != 0:
        raise BuildError("building the maintenance image needs root (device nodes, chroot check)")
    recipe = json.loads((HERE / "recipe.json").read_text())
    kver = kernel_version()
    versions = package_versions(recipe["packages"] + [f"linux-image-{kver}"])
    key = cache_key(recipe, kver, versions)
    manifest_path = out / "manifest.json"
    if not force and manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("cache_key") == key and all((out / f).exists() for f in old.get("files", {})):
            old["cached"] = True
            return old
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
        # Binaries and the shared libraries they need.
        elf: list[Path] = []
        for src, dest in recipe["binaries"].items():
            if not Path(src).exists():
                raise BuildError(f"{src} is missing ('make setup' installs its package)")
            copy_file(Path(src), root, dest)
            elf.append(Path(src))
        # The standard-library modules the agent imports, and their C extensions.
        for path in python_files(recipe["python_extra_modules"]):
            copy_file(path, root)
            if path.suffix == ".so":
                elf.append(path)
        (root / "usr/lib/python3.11/lib-dynload").mkdir(parents=True, exist_ok=True)
        for lib in shared_libs(elf):
            copy_file(Path(lib), root)
        # The agent.
        for path in AGENT_FILES:
            copy_file(path, root, "/opt/provisioner/" + path.relative_to(REPO).as_posix())
        run(PYTHON, "-I", "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash",
            "-s", str(root), "-p", "/", str(root / "usr/lib/python3.11"), str(root / "opt/provisioner"))
        # Drivers, then a module index for the image's own modprobe.
        mods = kernel_modules(kver, recipe["kernel_modules"])
        mod_root = root / "lib/modules" / kver
        for rel in mods:
            copy_file(Path("/lib/modules") / kver / rel, root, f"/lib/modules/{kver}/{rel}")
        for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
            if (Path("/lib/modules") / kver / name).exists():
                copy_file(Path("/lib/modules") / kver / name, root, f"/lib/modules/{kver}/{name}")
        run("depmod", "-b", str(root), kver)
        # Prove the agent starts on the image's own python before shipping it.
        run("chroot", str(root), "/usr/bin/python3", "-I", "-S", "-c",
            "import runpy, sys; sys.path.insert(0, '/opt/provisioner'); sys.argv = ['agent', '--help']; "
            "runpy.run_module('provisioner.agent', run_name='__main__')")
        normalize_tree(root, epoch)
        files = subprocess.run(["find", ".", "-print0"], cwd=root, check=True, capture_output=True).stdout
        ordered = b"\0".join(sorted(f for f in files.split(b"\0") if f)) + b"\0"
        cpio = subprocess.run(["cpio", "--null", "--create", "--format=newc", "--reproducible",
                               "--owner=0:0", "--quiet"], cwd=root, input=ordered, check=True,
                              capture_output=True).stdout
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
        "cache_key": key, "kernel": kver, "packages": versions, "modules": len(mods),
        "files": {name: {"sha256": hashlib.sha256((out / name).read_bytes()).hexdigest(),
                         "bytes": (out / name).stat().st_size} for name in ("vmlinuz", "initrd.img")},
        "uncompressed_initrd_bytes": len(cpio),
    }
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    manifest["cached"] = False
    return manifest


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
