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
import struct
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


# qemu probes a file's format from its first 2048 bytes (BLOCK_PROBE_BUF_SIZE); raw
# scores lowest, so any other format whose probe matches wins.
PROBE_SIZE = 2048
_VDI_SIGNATURE = struct.pack("<II", 0xBEDA107F, 0x00010001)  # at 0x40: signature, version 1.1


def _vmdk_descriptor(head: bytes) -> bool:
    """qemu's vmdk_probe for a text descriptor: comment lines and blank lines, then a
    'version=1|2|3' line. So the marker need not be at offset 0."""
    pos = 0
    while pos < len(head):
        if head[pos:pos + 1] == b"#":
            end = head.find(b"\n", pos)
            pos = len(head) if end < 0 else end + 1
            continue
        if head[pos:pos + 1] == b" ":
            while head[pos:pos + 1] == b" ":
                pos += 1
            if head[pos:pos + 1] == b"\r":
                pos += 1
            if head[pos:pos + 1] != b"\n":
                return False
            pos += 1
            continue
        return any(head.startswith(f"version={v}{eol}".encode(), pos) for v in "123" for eol in ("\n", "\r\n"))
    return False


def sniff(path: Path) -> str:
    """What the bytes say the file is, by qemu's own probing rules (block/*.c, *_probe),
    without running qemu: magic numbers wherever qemu looks for them."""
    with path.open("rb") as fh:
        head = fh.read(PROBE_SIZE)
    if head[:4] == b"QFI\xfb":
        return "qcow2" if head[4:8] in (b"\0\0\0\2", b"\0\0\0\3") else "qcow"
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if head[:8] == b"conectix":
        return "vpc"
    # Formats we refuse: a file that is one of these must never pass as raw, because
    # qemu would follow its references (VMDK extents, QED backing files...).
    for magic, name in ((b"KDMV", "vmdk"), (b"COWD", "vmdk"), (b"QED\x00", "qed"),
                        (b"WithoutFreeSpace", "parallels"), (b"WithouFreSpacExt", "parallels"),
                        (b"Bochs Virtual HD Image", "bochs"), (b"#!/bin/sh\n#V2.0 Format\n", "cloop"),
                        (b"LUKS\xba\xbe", "luks")):
        if head.startswith(magic):
            return name
    if head[0x40:0x48] == _VDI_SIGNATURE:
        return "vdi"
    if _vmdk_descriptor(head):
        return "vmdk"
    return "raw"


def _has_vhd_footer(path: Path) -> bool:
    """A fixed VHD keeps its only header as a footer, in the last 512 bytes."""
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        if size < 512:
            return False
        fh.seek(size - 512)
        return fh.read(8) == b"conectix"


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
    if found == "raw" and _has_vhd_footer(path):
        found = "vpc"
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
