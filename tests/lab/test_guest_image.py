"""The test guest image boots on its own from a differencing disk over it, under qemu:
it takes its name from a cloud-init NoCloud config drive and its guest agent answers,
which is how the provisioner will see a guest ready."""

import json
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUEST_IMAGE = REPO / "build/images/guest/guest.qcow2"


def agent_call(sock_path: Path, command: dict, timeout: float = 5) -> dict:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(sock_path))
        sock.sendall(json.dumps(command).encode() + b"\n")
        return json.loads(sock.makefile().readline())


def test_the_guest_image_boots_reads_its_config_drive_and_answers(tmp_path):
    before = subprocess.run(["sha256sum", str(GUEST_IMAGE)], capture_output=True, text=True).stdout.split()[0]
    overlay, drive = tmp_path / "web-1.qcow2", tmp_path / "cidata"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(GUEST_IMAGE), "-F", "qcow2", str(overlay)],
                   check=True)
    drive.mkdir()
    (drive / "meta-data").write_text("instance-id: web-1\nlocal-hostname: web-1\n")
    (drive / "user-data").write_text("#cloud-config\nhostname: web-1\n")
    subprocess.run(["genisoimage", "-quiet", "-output", str(tmp_path / "cidata.iso"), "-volid", "cidata", "-joliet",
                    "-rock", str(drive / "user-data"), str(drive / "meta-data")], check=True)
    qga, console = tmp_path / "qga.sock", tmp_path / "console.log"
    qemu = subprocess.Popen([
        "qemu-system-x86_64", "-machine", "pc", "-m", "256", "-smp", "1", "-display", "none", "-nic", "none",
        "-serial", f"file:{console}", "-drive", f"file={overlay},if=virtio",
        "-drive", f"file={tmp_path / 'cidata.iso'},media=cdrom,if=ide,index=2", "-device", "virtio-serial",
        "-chardev", f"socket,path={qga},server=on,wait=off,id=qga0",
        "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"], stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 120
        while "provisioner-guest: ready" not in (console.read_text(errors="replace") if console.exists() else ""):
            assert qemu.poll() is None, qemu.stderr.read().decode()
            assert time.monotonic() < end, console.read_text(errors="replace")[-2000:]
            time.sleep(0.5)
        assert agent_call(qga, {"execute": "guest-sync", "arguments": {"id": 7}}) == {"return": 7}
        assert agent_call(qga, {"execute": "guest-get-host-name"})["return"]["host-name"] == "web-1"
    finally:
        qemu.kill()
        qemu.wait()
    # The guest wrote to its overlay only: the base is byte for byte what was built.
    assert subprocess.run(["sha256sum", str(GUEST_IMAGE)], capture_output=True, text=True).stdout.split()[0] == before
