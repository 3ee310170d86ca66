"""Hardware inspection from /proc, /sys and dmidecode: CPUs, memory, disks, NICs, DMI
and firmware. Each reader takes a root so tests can point it at a recorded tree."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

_DMI_FIELDS = ("sys_vendor", "product_name", "product_serial", "product_uuid", "product_version",
               "board_vendor", "board_name", "board_serial", "chassis_serial", "bios_vendor",
               "bios_version", "bios_date")
_SKIP_DISKS = re.compile(r"^(loop|ram|zram|sr|fd|dm-|md|nbd)")
_SIZE_RE = re.compile(r"^\s*Size:\s*(\d+)\s*(MB|GB|TB|kB)\s*$", re.MULTILINE)
_UNIT_MIB = {"kB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 1024 * 1024}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def cpu_info(root: Path) -> dict[str, Any]:
    text = _read(root / "proc/cpuinfo") or ""
    blocks = [b for b in text.split("\n\n") if b.strip()]
    model = None
    sockets, cores = set(), set()
    flags: list[str] = []
    for block in blocks:
        fields = dict((k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in block.splitlines()))
        model = model or fields.get("model name")
        sockets.add(fields.get("physical id", "0"))
        cores.add((fields.get("physical id", "0"), fields.get("core id", fields.get("processor"))))
        flags = flags or fields.get("flags", "").split()
    return {"count": len(blocks), "model": model, "sockets": len(sockets), "cores": len(cores),
            "virtualization": "vmx" in flags or "svm" in flags,
            "architecture": os.uname().machine}


def memory_info(root: Path, dmidecode: list[str] | None = None) -> dict[str, Any]:
    """Installed memory from SMBIOS (what the machine has), else what the kernel sees."""
    meminfo = _read(root / "proc/meminfo") or ""
    match = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
    usable_mib = int(match.group(1)) // 1024 if match else None
    installed = None
    if dmidecode:
        try:
            out = subprocess.run(dmidecode + ["-t", "17"], capture_output=True, text=True, timeout=30).stdout
            sizes = [float(n) * _UNIT_MIB[u] for n, u in _SIZE_RE.findall(out)]
            installed = int(sum(sizes)) if sizes else None
        except (OSError, subprocess.SubprocessError):
            installed = None
    return {"total_mib": installed or usable_mib, "usable_mib": usable_mib,
            "source": "smbios" if installed else "kernel"}


def disks(root: Path) -> list[dict[str, Any]]:
    out = []
    block = root / "sys/block"
    for dev in sorted(block.iterdir()) if block.is_dir() else []:
        if _SKIP_DISKS.match(dev.name):
            continue
        sectors = _read(dev / "size")
        serial = _read(dev / "serial") or _read(dev / "device/serial") or _read(dev / "device/vpd_pg80")
        out.append({
            "name": dev.name,
            "size_bytes": int(sectors) * 512 if sectors and sectors.isdigit() else 0,
            "model": _read(dev / "device/model"),
            "vendor": _read(dev / "device/vendor"),
            "serial": serial.strip("\x00 ") if serial else None,
            "rotational": _read(dev / "queue/rotational") == "1",
            "removable": _read(dev / "removable") == "1",
        })
    return out


def nics(root: Path) -> list[dict[str, Any]]:
    out = []
    net = root / "sys/class/net"
    for dev in sorted(net.iterdir()) if net.is_dir() else []:
        if dev.name == "lo" or not (dev / "device").exists():
            continue  # virtual interfaces have no device
        speed = _read(dev / "speed")
        driver = dev / "device/driver"
        out.append({
            "name": dev.name,
            "mac": _read(dev / "address"),
            "carrier": _read(dev / "carrier") == "1",
            "speed_mbps": int(speed) if speed and speed.lstrip("-").isdigit() and int(speed) > 0 else None,
            "driver": os.path.basename(os.readlink(driver)) if driver.is_symlink() else None,
        })
    return out


def dmi(root: Path) -> dict[str, Any]:
    base = root / "sys/class/dmi/id"
    return {f: _read(base / f) for f in _DMI_FIELDS if _read(base / f) is not None}


def firmware(root: Path) -> str:
    return "uefi" if (root / "sys/firmware/efi").is_dir() else "bios"


def collect(root: Path = Path("/"), dmidecode: list[str] | None = None) -> dict[str, Any]:
    if dmidecode is None:
        found = next((p for p in ("/usr/sbin/dmidecode", "/sbin/dmidecode") if os.path.exists(p)), None)
        dmidecode = [found] if found and os.geteuid() == 0 else None
    return {"cpu": cpu_info(root), "memory": memory_info(root, dmidecode), "disks": disks(root),
            "nics": nics(root), "dmi": dmi(root), "firmware": firmware(root)}
