"""Guest creation on a shared base vs a full copy of the base, side by side in the same
run, through the lab's real libvirtd.

For a 1 GiB and a 20 GiB base (raw, filled with random bytes, so nothing is sparse):
  provisioner  what a new guest costs: its overlay made by libvirt's storage API over
               the shared base, its config drive (genisoimage, uploaded by stream) and
               its domain defined from the template (not started)
  cp --sparse  a full copy of the base, the way a guest gets its own disk without
               differencing layers
  qemu-img     qemu-img convert -O qcow2 of the base
Each side's time is its wall time (with a sync); its extra disk is what `du` counts for
the new files. Then 20 guests on the 1 GiB base vs 20 copies of it."""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import libvirt

from provisioner.guests.configdrive import make_iso
from provisioner.guests.placement import Guest
from provisioner.guests.render import domain_xml
from provisioner.hypervisor.pool import Pool

POOL = "provisioner-bench"


def _fill(path: Path, gib: int) -> None:
    with path.open("wb") as fh:
        block = os.urandom(16 << 20)
        for i in range(gib * 64):
            fh.write(block[i % 7:] + block[:i % 7])  # no two blocks alike, cheap to make
        fh.flush()
        os.fsync(fh.fileno())


def _du(paths: list[Path]) -> int:
    return sum(p.stat().st_blocks * 512 for p in paths if p.exists())


def _timed(fn: Any) -> float:
    start = time.monotonic()
    fn()
    subprocess.run(["sync"], check=True)
    return time.monotonic() - start


def _guest(pool: Pool, conn: libvirt.virConnect, base: Any, name: str, logs: Path) -> list[Path]:
    """What creating one guest does to the host's disk, but the start."""
    guest = Guest(name, "bench", 1, "lab", (0,), 128, 0)
    overlay = pool.overlay(f"{name}.qcow2", base, "raw", base.info()[1])
    iso = make_iso({"meta-data": f"instance-id: {name}\nlocal-hostname: {name}\n", "user-data": "#cloud-config\n"})
    drive, _ = pool.upload(f"{name}-cidata.iso", io.BytesIO(iso), len(iso))
    conn.defineXML(domain_xml(guest, domain_type="qemu", overlay=overlay.path(), config_drive=drive.path(),
                              console_log=str(logs / f"{name}.log"), base_sha256="0" * 64))
    return [Path(overlay.path()), Path(drive.path())]


def _drop_guest(pool: Pool, conn: libvirt.virConnect, name: str) -> None:
    conn.lookupByName(name).undefine()
    pool.delete(f"{name}.qcow2")
    pool.delete(f"{name}-cidata.iso")


def bench_guests(work: Path, rounds: int) -> dict[str, Any]:
    from provisioner.lab.lab import Lab

    lab = Lab()
    lab.down()
    lab.up(nodes=1, racks=1, memory_mib=256)
    conn = lab.connect()
    try:
        pool = Pool(conn, work / "pool", name=POOL)
        results: dict[str, Any] = {"rounds": rounds}
        for gib in (1, 20):
            base_path = work / "pool" / f"base-{gib}g.raw"
            _fill(base_path, gib)
            pool.pool.refresh(0)
            base = pool.volume(base_path.name)
            times: dict[str, list[float]] = {"provisioner": [], "cp --sparse": [], "qemu-img convert": []}
            extra: dict[str, int] = {}
            for r in range(rounds):
                made: list[Path] = []
                times["provisioner"].append(_timed(lambda: made.extend(_guest(pool, conn, base, f"g{gib}-{r}",
                                                                              work))))
                extra["provisioner"] = _du(made)
                _drop_guest(pool, conn, f"g{gib}-{r}")
                copy = work / f"copy-{gib}g.raw"
                times["cp --sparse"].append(_timed(lambda: subprocess.run(
                    ["cp", "--sparse=always", str(base_path), str(copy)], check=True)))
                extra["cp --sparse"] = _du([copy])
                copy.unlink()
                converted = work / f"copy-{gib}g.qcow2"
                times["qemu-img convert"].append(_timed(lambda: subprocess.run(
                    ["qemu-img", "convert", "-O", "qcow2", str(base_path), str(converted)], check=True)))
                extra["qemu-img convert"] = _du([converted])
                converted.unlink()
            results[f"base_{gib}GiB"] = {
                "seconds": {k: round(statistics.median(v), 3) for k, v in times.items()},
                "extra_bytes": extra}
            if gib == 1:
                made = []
                for i in range(20):
                    made += _guest(pool, conn, base, f"many-{i}", work)
                twenty = _du(made)
                for i in range(20):
                    _drop_guest(pool, conn, f"many-{i}")
                results["twenty_guests_on_1GiB_base_bytes"] = {
                    "provisioner (20 guests + 1 shared base)": twenty + _du([base_path]),
                    "20 full copies (cp --sparse)": 20 * results["base_1GiB"]["extra_bytes"]["cp --sparse"]}
            pool.delete(base_path.name)
        return results
    finally:
        try:
            p = conn.storagePoolLookupByName(POOL)
            for vol in p.listAllVolumes(0):
                vol.delete(0)
            p.destroy()
            p.undefine()
        except libvirt.libvirtError:
            pass
        conn.close()
        lab.down()
