"""`provisioner console` and the checks API against a real daemon: a node's console log is
read from consoles.node_log; bad requests get one line and change nothing."""

from __future__ import annotations

import pytest

from provisioner.daemon import Daemon

from .conftest import Running, settings_for


@pytest.fixture
def with_consoles(workdir):
    daemon = Daemon(settings_for(workdir, consoles_node_log=str(workdir / "consoles/{node}.console.log")))
    daemon.start()
    run = Running(daemon, workdir)
    assert run.cli(*run.enroll_args("52:54:00:00:00:07", "10.0.0.9", "rack-1", "--name", "n7", "--no-inspect"))[0] == 0
    yield run
    daemon.stop()


def one_line(text: str) -> str:
    assert text.count("\n") == 1, text
    return text.strip()


def test_console_shows_the_end_of_the_nodes_log_without_terminal_noise(with_consoles):
    run = with_consoles
    log = run.workdir / "consoles/n7.console.log"
    log.parent.mkdir()
    log.write_bytes(b"\x1b[2J\x1b[01;01HSeaBIOS (version 1.16)\r\n" + b"filler line\n" * 20000 +
                    b"provisioner-host: up after 16.72s\r\n")
    code, out, err = run.cli("console", "n7")
    assert code == 0, err
    assert out.endswith("provisioner-host: up after 16.72s\n")
    assert "\x1b" not in out and "\r" not in out
    assert len(out.encode()) <= 65536 and out.startswith("filler line\n")  # whole lines only
    code, _, err = run.cli("console", "n7", "--bytes", "100000000")
    assert code == 2 and "bytes must be a number" in one_line(err)
    code, out, _ = run.cli("--json", "console", "n7", "--bytes", "40")
    assert code == 0 and '"path"' in out and "up after" in out


def test_console_of_a_node_without_a_log_or_an_unknown_name_is_one_line(with_consoles):
    run = with_consoles
    code, _, err = run.cli("console", "n7")
    assert code == 1 and "no console log for n7 at" in one_line(err)
    code, _, err = run.cli("console", "nobody")
    assert code == 1 and "no node or guest nobody" in one_line(err)


def test_checks_refuse_bad_requests_and_say_why_a_node_cannot_be_checked(with_consoles, tmp_path):
    run = with_consoles
    for body, words in (({}, "nodes: a list"), ({"nodes": "n7"}, "nodes: a list"),
                        ({"nodes": ["n7"], "playbook": str(tmp_path / "none.yml")}, "no playbook at")):
        with pytest.raises(Exception) as exc:
            run.client.post("/v1/checks", body)
        assert words in str(exc.value)
    with pytest.raises(Exception) as exc:
        run.client.post("/v1/checks", {"nodes": ["nobody"]})
    assert "nobody" in str(exc.value)
    doc = run.client.post("/v1/checks", {"nodes": ["n7"]})["results"]
    assert doc == {"n7": [{"name": "reachable", "ok": False, "seconds": 0.0,
                           "detail": "n7 is enrolled, not active: not deployed"}]}
