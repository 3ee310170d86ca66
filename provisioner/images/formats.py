"""Disk image formats: what a file really is, and whether it is safe to hand to qemu.

The lesson of CVE-2024-44082 (Ironic, Glance): never let qemu-img guess a format, and
never accept an image that makes qemu open another file. So an image is read twice:
first by our own look at its magic numbers (no qemu involved), then by `qemu-img info`
and `qemu-img check` with the format forced to the one declared, under memory and CPU
limits. Any disagreement, any backing or external data file, or any damage refuses it.
"""

from __future__ import annotations

import json
import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageRefused

# Formats we accept, by qemu's names; what a file name's extension declares.
FORMATS = ("qcow2", "raw", "vpc", "vhdx")
EXTENSIONS = {".qcow2": "qcow2", ".img": "raw", ".raw": "raw", ".vhd": "vpc", ".vhdx": "vhdx"}
# qemu-img may not use more than this to read a header (a hostile image can ask for more).
_QEMU_IMG_LIMITS = {"as": 1 << 30, "cpu": 30}


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int
    actual_size: int


def declared_format(filename: str, given: str | None = None) -> str:
    """The format the operator declares: --format, else the file name's extension."""
    if given:
        fmt = {"vhd": "vpc"}.get(given, given)
        if fmt not in FORMATS:
            raise ImageRefused(f"format {given!r} is not accepted: use qcow2, raw, vhd (vpc) or vhdx")
        return fmt
    suffix = Path(filename).suffix.lower()
    if suffix not in EXTENSIONS:
        raise ImageRefused(f"cannot tell the format of {filename!r} from its name: "
                           "pass --format qcow2|raw|vhd|vhdx")
    return EXTENSIONS[suffix]


def sniff(path: Path) -> str:
    """What the bytes say the file is, by magic numbers only."""
    with path.open("rb") as fh:
        head = fh.read(4096)
        fh.seek(0, 2)
        size = fh.tell()
        tail = b""
        if size >= 512:
            fh.seek(size - 512)
            tail = fh.read(512)
    if head[:4] == b"QFI\xfb":
        return "qcow2"
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if head[:8] == b"conectix" or tail[:8] == b"conectix":
        return "vpc"
    # Formats we refuse: a file that is one of these must never pass as raw, because
    # qemu would follow its references (VMDK extents, QED backing files...).
    for magic, name in ((b"KDMV", "vmdk"), (b"# Disk DescriptorFile", "vmdk"), (b"QED\x00", "qed"),
                        (b"WithoutFreeSpace", "parallels"), (b"<<< Oracle VM VirtualBox Disk Image >>>", "vdi"),
                        (b"COWD", "vmdk"), (b"cloop", "cloop"), (b"LUKS\xba\xbe", "luks")):
        if head.startswith(magic):
            return name
    return "raw"


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_QEMU_IMG_LIMITS["as"],) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (_QEMU_IMG_LIMITS["cpu"],) * 2)


def _qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120,
                              preexec_fn=_limit)
    except FileNotFoundError as exc:
        raise ImageRefused("qemu-img is not installed (Debian package qemu-utils)") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageRefused("qemu-img took over 120 s to read the image header") from exc


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else "no detail"


def inspect_image(path: Path, declared: str) -> ImageInfo:
    """Check that the file is what it declares and safe for qemu, or raise ImageRefused."""
    if path.stat().st_size == 0:
        raise ImageRefused("the image is empty")
    found = sniff(path)
    if found not in FORMATS:
        raise ImageRefused(f"the file is a {found} image, a format we do not accept")
    if found != declared:
        raise ImageRefused(f"the image declares {declared} but its content is {found}")
    proc = _qemu_img("info", "-f", declared, "--output=json", str(path))
    if proc.returncode != 0:
        raise ImageRefused(f"qemu-img cannot read it as {declared}: {_first_line(proc.stderr)}")
    info = json.loads(proc.stdout)
    if info.get("format") != declared:
        raise ImageRefused(f"qemu-img reads it as {info.get('format')}, not {declared}")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise ImageRefused(f"the image has a backing file ({info.get('backing-filename')}): "
                           "a base must stand alone")
    data = (info.get("format-specific") or {}).get("data") or {}
    if data.get("data-file") or data.get("data-file-raw"):
        raise ImageRefused(f"the image keeps its data in an external file ({data.get('data-file')})")
    if declared in ("qcow2", "vhdx"):
        check = _qemu_img("check", "-f", declared, "--output=json", str(path))
        if check.returncode not in (0, 3):  # 3: leaked clusters only, harmless
            detail = check.stderr.strip().splitlines()
            reason = "truncated or corrupt" if check.returncode == 2 else "damaged"
            raise ImageRefused(f"qemu-img check finds the image {reason}: "
                               f"{detail[0] if detail else _first_line(check.stdout)}"
                               f"{f' (and {len(detail) - 1} more)' if len(detail) > 1 else ''}")
    virtual = int(info.get("virtual-size") or 0)
    if virtual <= 0:
        raise ImageRefused("the image has no virtual size")
    return ImageInfo(format=declared, virtual_size=virtual, actual_size=path.stat().st_size)
