"""The nightly run remembers: nights recorded and read back per machine, what stands out
in them, and malformed records refused whole."""

from __future__ import annotations

import pytest

from provisioner.errors import InvalidInput
from provisioner.nightly.history import Night, judge

from .stores import new_store


def night(passed: bool, write: float, reason: str | None = None) -> dict:
    return {"passed": passed, "reason": reason, "phases": [("power-on", 3.0), ("write-image", write)]}


def test_a_machine_that_keeps_failing_and_a_phase_that_grows_slower_stand_out():
    assert judge([night(True, 60), night(True, 61), night(True, 59)]) == []
    assert judge([night(False, 60, "disk"), night(True, 60), night(False, 60, "disk")]) == \
        ["failed 2 of its last 3 nights"]
    assert judge([night(True, 95), night(True, 60), night(True, 62)]) == \
        ["write-image took 95s, 1.6x its median of 61s"]
    assert judge([night(True, 80), night(True, 72), night(True, 66), night(True, 60)]) == \
        ["write-image grew slower 3 nights in a row: 60s -> 66s -> 72s -> 80s"]
    assert judge([night(True, 80), night(True, 72), night(True, 66), night(True, 75)]) == [], "not every night"
    # Short phases are noise: power-on doubling from 3 s to 6 s says nothing.
    assert judge([{"passed": True, "reason": None, "phases": [("power-on", 6.0)]},
                  {"passed": True, "reason": None, "phases": [("power-on", 3.0)]},
                  {"passed": True, "reason": None, "phases": [("power-on", 3.0)]}]) == []
    assert judge([night(True, 600)]) == [], "one night says nothing of a trend"


def test_nights_are_kept_per_machine_newest_first_and_a_bad_record_is_refused_whole(tmp_path):
    store = new_store(tmp_path)
    for i in range(5):
        store.record_night("rack-1", None, 1000.0 + i, 1100.0 + i, [
            {"name": "a", "rack": "rack-1", "passed": i != 3, "reason": "disk" if i == 3 else None,
             "phases": [["write-image", 60.0 + i]]},
            {"name": "b", "rack": "rack-1", "passed": True, "reason": None, "phases": []}])
    history = store.machine_nights(["a"], 3)
    assert list(history) == ["a"] and [n["night"] for n in history["a"]] == [5, 4, 3]
    assert [n["passed"] for n in history["a"]] == [True, False, True]
    assert history["a"][0]["phases"] == [("write-image", 64.0)]
    assert set(store.machine_nights(None, 1)) == {"a", "b"}
    assert [n["failed"] for n in store.nights(2)] == [0, 1]

    good = {"pool": "rack-1", "job": 3, "started_at": 1.0e9, "ended_at": 1.0e9 + 60,
            "machines": [{"name": "a", "rack": "rack-1", "passed": True, "phases": [["checks", 4.5]]}]}
    assert Night.parse(good).machines[0].phases == (("checks", 4.5),)
    for bad, words in (({"pool": ""}, "pool"), ({"job": "3"}, "job"), ({"started_at": "yesterday"}, "times"),
                       ({"machines": []}, "machines"), ({"machines": [{"name": "a", "rack": "r", "passed": "yes"}]},
                                                        "passed"),
                       ({"machines": [{"name": "a", "rack": "r", "passed": True, "phases": [["x", -1]]}]}, "phases"),
                       ({"machines": [good["machines"][0]] * 2}, "twice")):
        with pytest.raises(InvalidInput, match=words):
            Night.parse({**good, **bad})
