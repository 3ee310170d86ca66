import io

from provisioner.display.output import progress_text, size_text


def test_sizes_read_like_an_operator_writes_them():
    assert size_text(None) == "" and size_text(512) == "512 B"
    assert size_text(209780736) == "200.1 MiB" and size_text(1 << 30) == "1.0 GiB"


def test_write_progress_as_the_agent_last_reported_it():
    assert progress_text(None) == ""
    assert progress_text({"phase": "writing", "bytes": 1 << 28, "total": 1 << 30}) == "writing 25% of 1.0 GiB"
    assert progress_text({"phase": "boot-files"}) == "boot-files"
    assert progress_text({"phase": "writing", "bytes": 5, "total": 0}) == "writing"


def test_tally_counts_members_by_status():
    from provisioner.display.output import tally
    assert tally([{"status": "done"}, {"status": "failed"}, {"status": "done"}]) == "2 done, 1 failed"
    assert tally([]) == ""


def test_progress_says_which_path_the_image_takes():
    assert progress_text({"phase": "writing", "path": "multicast", "bytes": 1 << 28, "total": 1 << 30}) == \
        "writing (multicast) 25% of 1.0 GiB"
    assert progress_text({"phase": "writing", "path": "http", "bytes": 0, "total": 1 << 30}) == \
        "writing (HTTP) 0% of 1.0 GiB"
    assert progress_text({"phase": "waiting", "path": "multicast"}) == "waiting for the multicast session"


def test_a_jobs_transfer_lines_say_what_multicast_sent_and_http_repaired():
    from provisioner.display.jobs import transfer_lines
    job = {"stats": {"notes": ["batch 1: multicast session 239.255.60.2:9000 for 3 node(s)"],
                     "multicast": [{"batch": 1, "group": "239.255.60.2", "portbase": 9000, "state": "done",
                                    "complete": True, "joined": 3, "expected": 3, "dropped": 0,
                                    "sent_bytes": 210 << 20, "image_bytes": 200 << 20,
                                    "retransmitted_bytes": 1 << 20, "http_bytes": 0, "error": ""}]},
           "multicast_sessions": []}
    lines = transfer_lines(job)
    assert lines[0].strip().startswith("batch 1: multicast session")
    assert "done, 3 of 3 joined, 0 dropped; sent 210.0 MiB (1.05x the image), 1.0 MiB of it retransmitted; " \
           "HTTP repair 0 B" in lines[1]
    job["stats"]["multicast"][0].update(complete=False, dropped=3)
    assert "ended early, 3 of 3 joined, 3 dropped" in transfer_lines(job)[1]


def test_a_reimage_plan_lists_each_guest_move_or_stop_under_its_batch(capsys):
    from provisioner.display.jobs import show_plan

    show_plan({"kind": "reimage", "target": "rack-1", "image": {"ref": "host:2", "sha256": "a" * 64},
               "batches": [["n1"], ["n2"]], "max_unavailable": 1, "max_parallel": 8, "max_failures": 0,
               "guests": [{"guest": "web-1", "role": "web", "action": "move", "batch": 0, "from": "n1", "to": "h3",
                           "why": "its host n1 was reimaged"},
                          {"guest": "db-1", "role": "db", "action": "stop", "batch": 1, "from": "n2", "to": "n2",
                           "why": "healing.on_reimage is stop"}]})
    out = capsys.readouterr().out
    assert "  batch 1: n1\n    guest web-1 (web): move n1 -> h3\n  batch 2: n2\n" in out, out
    assert "    guest db-1 (db): stop on n2, made again there once it is back " \
           "(healing.on_reimage is stop)" in out, out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_live_view_redraws_only_on_a_terminal_that_can_move_its_cursor(monkeypatch):
    from provisioner.display.live import LiveView, Row

    row = Row("web-1", ("web-1", "rack-1", "running", "write-image"), "web-1  running write-image", 0.5)
    for term, live in (("xterm-256color", True), ("dumb", False), ("", False)):
        monkeypatch.setenv("TERM", term)
        out = _Terminal()
        with LiveView(("node", "rack", "status", "detail"), out=out) as view:
            assert view.tty is live, term
            view.update([row], 1.0)
            view.update([row], 2.0)
        text = out.getvalue()
        if live:
            assert "\x1b[" in text and "web-1" in text
        else:
            assert text == "[   1.0s] web-1  running write-image\n", "one plain line per change"
    piped = io.StringIO()
    monkeypatch.setenv("TERM", "xterm-256color")
    with LiveView(("node",), out=piped) as view:
        assert view.tty is False
