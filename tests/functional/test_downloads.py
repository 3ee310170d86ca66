"""Interrupted downloads resume with a Range request: the operator's `image import URL`
(run again) and the agent's image download (within one deploy). A server that breaks
the first connection half way stands in for a flaky network."""

import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest

from provisioner.agent.download import ChecksumMismatch, fetch


class FlakyServer:
    """Serves one file; the first full GET is cut off half way; Range requests work."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.ranges: list[str] = []
        self.cut = True
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                wanted = self.headers.get("Range")
                if wanted:
                    outer.ranges.append(wanted)
                    start = int(wanted.split("=")[1].rstrip("-"))
                    body = outer.payload[start:]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}")
                else:
                    body = outer.payload
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut and not wanted:
                    outer.cut = False
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/host.raw"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def flaky():
    server = FlakyServer(os.urandom(3 << 20))
    yield server
    server.close()


def test_image_import_from_a_url_resumes_when_run_again(running, flaky, workdir, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))
    code, out, err = running.cli("image", "import", flaky.url, "--name", "host")
    assert code == 1 and "run the same import again to resume it" in err and "Traceback" not in err, err
    assert running.client.get("/v1/images")["images"] == []
    code, out, err = running.cli("image", "import", flaky.url, "--name", "host")
    assert code == 0, err
    assert flaky.ranges == [f"bytes={len(flaky.payload) // 2}-"]
    assert running.client.get("/v1/images/host")["sha256"] == hashlib.sha256(flaky.payload).hexdigest()


def test_the_agent_resumes_within_one_download_and_checks_the_sum(flaky, tmp_path):
    sha = hashlib.sha256(flaky.payload).hexdigest()
    dest = tmp_path / "base.raw"
    moved = fetch(flaky.url, dest, sha256=sha, size=len(flaky.payload), token=None, sleep=lambda s: None)
    assert dest.read_bytes() == flaky.payload and moved.http == len(flaky.payload) and moved.multicast == 0
    assert flaky.ranges == [f"bytes={len(flaky.payload) // 2}-"]
    assert not Path(str(dest) + ".part").exists()


def test_the_agent_discards_a_download_whose_sum_is_wrong(flaky, tmp_path):
    flaky.cut = False
    dest = tmp_path / "base.raw"
    with pytest.raises(ChecksumMismatch, match="checksum mismatch"):
        fetch(flaky.url, dest, sha256="0" * 64, size=len(flaky.payload), token=None)
    assert not dest.exists() and not Path(str(dest) + ".part").exists()
