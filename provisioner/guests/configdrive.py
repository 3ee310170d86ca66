"""A guest's config drive: an ISO 9660 image labelled `cidata` holding meta-data and
user-data (cloud-init's NoCloud layout), made with genisoimage."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from ..errors import HostError


def make_iso(files: dict[str, str]) -> bytes:
    with tempfile.TemporaryDirectory(prefix="cidata-") as tmp:
        paths = []
        for name, text in sorted(files.items()):
            path = Path(tmp) / name
            path.write_text(text)
            paths.append(str(path))
        out = Path(tmp) / "cidata.iso"
        proc = subprocess.run(["genisoimage", "-quiet", "-output", str(out), "-volid", "cidata", "-joliet",
                               "-rock", *paths], capture_output=True, text=True)
        if proc.returncode != 0:
            raise HostError(f"genisoimage failed: {proc.stderr.strip()}")
        return out.read_bytes()
