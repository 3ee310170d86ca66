"""New versions of the host image for lab tests, made the way an operator patches an
image offline: the root filesystem gets a file more, written with debugfs (no mount)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


def patched(src: Path, dest: Path, files: dict[str, str], fmt: str = "qcow2") -> Path:
    """A copy of the host image `src` with `files` (absolute path -> text) added to its
    root filesystem, written to `dest` in `fmt` (qcow2 or raw)."""
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        raw = Path(tmp) / "root.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(src), str(raw)], check=True)
        for i, (path, text) in enumerate(files.items()):
            local = Path(tmp) / f"file-{i}"
            local.write_text(text)
            subprocess.run(["debugfs", "-w", "-R", f"write {local} {path}", str(raw)], check=True,
                           capture_output=True)
        if fmt == "raw":
            raw.rename(dest)
        else:
            subprocess.run(["qemu-img", "convert", "-O", fmt, str(raw), str(dest)], check=True)
    return dest
