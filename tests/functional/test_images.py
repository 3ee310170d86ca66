"""The image catalog through the real daemon and CLI: images that are unsafe or not what
they claim are refused with one clear line, and nothing is stored."""

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
