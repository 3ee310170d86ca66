"""The image catalog through the real daemon and CLI: images that are unsafe or not what
they claim are refused with one clear line, and nothing is stored."""

import json
import subprocess
from pathlib import Path

import pytest


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\x01" * (4 << 20))
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(tmp_path / "good.qcow2"))
    qemu_img("convert", "-f", "raw", "-O", "vpc", str(raw), str(tmp_path / "good.vhd"))
    qemu_img("create", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", str(tmp_path / "backing.qcow2"))
    (tmp_path / "raw-named.qcow2").write_bytes(raw.read_bytes())
    (tmp_path / "vhd-named.qcow2").write_bytes((tmp_path / "good.vhd").read_bytes())
    good = (tmp_path / "good.qcow2").read_bytes()
    (tmp_path / "truncated.qcow2").write_bytes(good[: len(good) // 3])
    return tmp_path


@pytest.mark.parametrize("name, reason", [
    ("backing.qcow2", "backing file"),
    ("raw-named.qcow2", "declares qcow2 but its content is raw"),
    ("vhd-named.qcow2", "declares qcow2 but its content is vpc"),
    ("truncated.qcow2", "truncated or corrupt"),
])
def test_unsafe_images_are_refused_and_nothing_is_stored(running, images, name, reason):
    code, out, err = running.cli("image", "import", str(images / name), "--name", "bad")
    assert code == 2, out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and reason in errors[0] and "Traceback" not in err
    assert running.client.get("/v1/images")["images"] == []
    store = running.settings.data_dir / "images"
    assert [p.name for p in store.iterdir() if p.name != ".incoming"] == []
    assert list((store / ".incoming").iterdir()) == []


def test_import_versions_and_remove(running, images):
    assert running.cli("image", "import", str(images / "good.qcow2"), "--name", "base")[0] == 0
    assert running.cli("image", "import", str(images / "good.vhd"), "--name", "base")[0] == 0
    doc = running.client.get("/v1/images/base")
    assert doc["version"] == "2" and doc["format"] == "vpc" and doc["versions"] == ["1", "2"]
    stored = running.settings.data_dir / "images" / doc["sha256"]
    assert stored.stat().st_mode & 0o222 == 0, "catalog files are read-only"
    assert running.client.get("/v1/images/base:1")["format"] == "qcow2"
    code, out, _ = running.cli("image", "remove", "base:2")
    assert code == 0 and not stored.exists()
    assert running.client.get("/v1/images/base")["version"] == "1"


def qemu_probes(path: Path) -> str:
    """The format qemu-img itself guesses (run here on the test's own files only)."""
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)["format"]


def disguised_raw_images(tmp_path: Path) -> dict[str, Path]:
    """Files whose format marker is not at offset 0, named .raw: qemu would still open each
    as something else and follow what it says."""
    extent = tmp_path / "extent.bin"
    extent.write_bytes(b"\0" * 512 * 8)
    made = {}
    vmdk = tmp_path / "vmdk-after-comments.raw"
    vmdk.write_bytes(b"# just a disk\n  \nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
                     + f'RW 8 FLAT "{extent}" 0\n'.encode() + b"\0" * (1 << 20))
    made["vmdk"] = vmdk
    qemu_img("create", "-f", "vdi", str(tmp_path / "real.vdi"), "1M")
    vdi = bytearray((tmp_path / "real.vdi").read_bytes())
    vdi[0:0x40] = b"\0" * 0x40  # no banner: qemu goes by the signature at 0x40
    (tmp_path / "vdi-at-0x40.raw").write_bytes(bytes(vdi))
    made["vdi"] = tmp_path / "vdi-at-0x40.raw"
    return made


def test_raw_images_that_qemu_would_open_as_another_format_are_refused(running, tmp_path):
    for fmt, path in disguised_raw_images(tmp_path).items():
        assert qemu_probes(path) == fmt  # the hazard is real: qemu does not see raw
        code, out, err = running.cli("image", "import", str(path), "--name", "bad")
        assert code == 2, out + err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"a {fmt} image" in errors[0], err
    assert running.client.get("/v1/images")["images"] == []
