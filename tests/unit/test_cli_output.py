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
