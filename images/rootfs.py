"""What the image recipes share: copying files of installed Debian packages with the
shared libraries they need, the standard-library modules a program imports, kernel
modules with their dependencies, and reproducible cpio archives. Nothing here touches
the network: every image is built from the packages installed on this machine."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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


def cache_key(inputs: list[Path], kver: str, versions: dict[str, str]) -> str:
    h = hashlib.sha256()
    for path in [*inputs, Path(__file__), *AGENT_FILES]:
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


def cpio_archive(root: Path) -> bytes:
    """A newc archive of the tree, sorted, owned by root: the same bytes every time."""
    files = subprocess.run(["find", ".", "-print0"], cwd=root, check=True, capture_output=True).stdout
    ordered = b"\0".join(sorted(f for f in files.split(b"\0") if f)) + b"\0"
    return subprocess.run(["cpio", "--null", "--create", "--format=newc", "--reproducible",
                           "--owner=0:0", "--quiet"], cwd=root, input=ordered, check=True,
                          capture_output=True).stdout


def add_binaries(root: Path, binaries: dict[str, str]) -> list[Path]:
    """Copy each source binary to its place in the image; the ELF files copied."""
    elf = []
    for src, dest in binaries.items():
        if not Path(src).exists():
            raise BuildError(f"{src} is missing ('make setup' installs its package)")
        copy_file(Path(src), root, dest)
        elf.append(Path(src))
    return elf


def add_python(root: Path, extras: list[str]) -> list[Path]:
    """The standard-library modules the agent imports, and the agent; the C extensions."""
    elf = []
    for path in python_files(extras):
        copy_file(path, root)
        if path.suffix == ".so":
            elf.append(path)
    (root / "usr/lib/python3.11/lib-dynload").mkdir(parents=True, exist_ok=True)
    for path in AGENT_FILES:
        copy_file(path, root, "/opt/provisioner/" + path.relative_to(REPO).as_posix())
    run(PYTHON, "-I", "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash",
        "-s", str(root), "-p", "/", str(root / "usr/lib/python3.11"), str(root / "opt/provisioner"))
    return elf


def add_libs(root: Path, elf: list[Path]) -> None:
    for lib in shared_libs(elf):
        copy_file(Path(lib), root)


def add_modules(root: Path, kver: str, names: list[str]) -> int:
    """Drivers and their dependencies, then a module index for the image's own modprobe."""
    mods = kernel_modules(kver, names)
    for rel in mods:
        copy_file(Path("/lib/modules") / kver / rel, root, f"/lib/modules/{kver}/{rel}")
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (Path("/lib/modules") / kver / name).exists():
            copy_file(Path("/lib/modules") / kver / name, root, f"/lib/modules/{kver}/{name}")
    run("depmod", "-b", str(root), kver)
    return len(mods)


def check_agent(root: Path) -> None:
    """Prove the agent starts on the image's own python before shipping it."""
    run("chroot", str(root), "/usr/bin/python3", "-I", "-S", "-c",
        "import runpy, sys; sys.path.insert(0, '/opt/provisioner'); sys.argv = ['agent', '--help']; "
        "runpy.run_module('provisioner.agent', run_name='__main__')")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_manifest(out: Path, key: str, artifacts: list[str]) -> dict | None:
    """The manifest of the last build in `out`, if it was built from the same inputs
    and its artifacts are still there (marked cached); None means build again."""
    path = out / "manifest.json"
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    if old.get("cache_key") != key or not all((out / a).exists() for a in artifacts):
        return None
    old["cached"] = True
    return dict(old)


def save_manifest(out: Path, manifest: dict) -> dict:
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return {**manifest, "cached": False}


def busybox_links(root: Path) -> None:
    """The applets as symlinks, made now: an image's init runs before any shell could."""
    applets = subprocess.run(["/bin/busybox", "--list-full"], check=True, capture_output=True,
                             text=True).stdout.split()
    for applet in applets:
        link = root / applet
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")


def small_initramfs(init: Path, dirs: list[str], binaries: dict[str, str], modules: list[str], kver: str,
                    dest: Path) -> None:
    """A zstd cpio initramfs: `init` as /init, the binaries and their libraries, the
    modules with their index, and a console device."""
    with tempfile.TemporaryDirectory(prefix="initrd-") as tmp:
        root = Path(tmp)
        for d in ("dev", *dirs):
            (root / d).mkdir(parents=True, exist_ok=True)
        os.mknod(root / "dev/console", 0o600 | stat.S_IFCHR, os.makedev(5, 1))
        shutil.copy2(init, root / "init")
        os.chmod(root / "init", 0o755)
        add_libs(root, add_binaries(root, binaries))
        add_modules(root, kver, modules)
        normalize_tree(root, 0)
        dest.write_bytes(subprocess.run(["zstd", "-q", "-10", "-T1", "-c"], input=cpio_archive(root), check=True,
                                        capture_output=True).stdout)
