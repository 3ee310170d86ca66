"""TFTP and HTTP serve what they must, and nothing outside their roots."""

import hashlib
import http.client
import io
import socket
from pathlib import Path

import pytest
import tftpy

IPXE = Path("/usr/lib/ipxe")
TRAVERSALS_TFTP = ["../../../../etc/passwd", "/etc/passwd", "..%2f..%2f..%2fetc%2fpasswd",
                   "boot.ipxe/../../../etc/passwd", "undionly.kpxe/../../etc/shadow", "./../provisioner.db",
                   "..\\..\\etc\\passwd", "secret.key"]


def tftp_get(running, name):
    client = tftpy.TftpClient("127.0.0.1", running.settings.server_tftp_port)
    buf = io.BytesIO()
    client.download(name, buf, timeout=2, retries=1)
    return buf.getvalue()


def test_tftp_serves_the_ipxe_loaders_and_the_handover_script(running):
    for name in ("undionly.kpxe", "ipxe.efi", "snponly.efi"):
        assert tftp_get(running, name) == (IPXE / name).read_bytes()
    script = tftp_get(running, "boot.ipxe").decode()
    assert script.startswith("#!ipxe") and f":{running.daemon.http.port}/boot/${{netX/mac:hexhyp}}.ipxe" in script
    counts = running.client.get("/v1/stats")["counters"]
    assert counts["tftp:undionly.kpxe"] == 1 and counts["tftp:boot.ipxe"] == 1
    # No transfer took the server down (a restart would end every transfer in flight).
    assert "tftp:restarts" not in counts


def test_a_uefi_size_probe_is_served_and_not_logged_as_an_error(running, caplog):
    """UEFI firmware asks for the loader's size (tsize), ends that transfer with error 8,
    then fetches the file: both are served, and nothing is logged as an error."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"\x00\x01snponly.efi\x00octet\x00tsize\x000\x00blksize\x001468\x00",
                    ("127.0.0.1", running.settings.server_tftp_port))
        oack, peer = sock.recvfrom(2048)
        assert oack[:2] == b"\x00\x06" and b"tsize\x00" + str((IPXE / "snponly.efi").stat().st_size).encode() in oack
        sock.sendto(b"\x00\x05\x00\x08Failed to negotiate options\x00", peer)
    assert tftp_get(running, "snponly.efi") == (IPXE / "snponly.efi").read_bytes()
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_tftp_refuses_to_leave_its_root(running):
    for name in TRAVERSALS_TFTP:
        with pytest.raises(tftpy.TftpException):
            tftp_get(running, name)
    # tftpy refuses names that resolve outside its root; our allowlist refuses the rest.
    assert running.client.get("/v1/stats")["counters"]["tftp:refused"] >= 1


def http_get(running, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", running.daemon.http.port, timeout=10)
    conn.request("GET", path, headers=headers or {})  # raw: no client-side normalization
    resp = conn.getresponse()
    return resp.status, resp.read(), resp


TRAVERSALS_HTTP = [
    "/boot/maintenance/../../../../etc/passwd", "/boot/maintenance/..%2f..%2f..%2fetc%2fpasswd",
    "/boot/%2e%2e/%2e%2e/etc/passwd", "/boot/maintenance/%2fetc%2fpasswd", "//etc/passwd",
    "/boot/maintenance/..", "/boot/maintenance/%2e%2e%2fsecret", "/boot/..%2fdata%2fsecret.key",
    "/boot/maintenance/.hidden", "/etc/passwd", "/boot/maintenance/%00vmlinuz",
]


def test_http_refuses_to_leave_its_root(running):
    (running.settings.artifacts_dir / "maintenance").mkdir(parents=True, exist_ok=True)
    for path in TRAVERSALS_HTTP:
        status, body, _ = http_get(running, path)
        assert status in (400, 404) and b"root:" not in body, path


def test_http_serves_artifacts_whole_and_by_range(running):
    art = running.settings.artifacts_dir / "maintenance"
    art.mkdir(parents=True, exist_ok=True)
    data = bytes(range(256)) * 4096
    (art / "initrd.img").write_bytes(data)
    status, body, resp = http_get(running, "/boot/maintenance/initrd.img")
    assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    status, body, resp = http_get(running, "/boot/maintenance/initrd.img", {"Range": "bytes=1000-1999"})
    assert status == 206 and body == data[1000:2000]
    assert resp.getheader("Content-Range") == f"bytes 1000-1999/{len(data)}"
    status, _, _ = http_get(running, "/boot/maintenance/initrd.img", {"Range": f"bytes={len(data)}-"})
    assert status == 416


def test_sigterm_stops_the_daemon_cleanly_and_its_tftp_port_is_free(daemon_process):
    proc = daemon_process()
    proc.start()
    assert tftp_port_busy(proc.tftp_port)
    proc.stop()
    assert proc.proc.returncode == 0, "stopped by SIGTERM, not killed"
    log = (proc.workdir / "daemon.log").read_text()
    assert "provisioner stopped in" in log and "tftp" in log.split("provisioner stopped in", 1)[1]
    assert "Discarding data" not in log, "the datagram that wakes tftpy is not an operator's concern"
    assert not tftp_port_busy(proc.tftp_port)


def tftp_port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False
