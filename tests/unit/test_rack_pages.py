"""The racks page in pages of whole racks: each within its budget of tiles (a rack larger
than the budget alone), ranges of names that leave no rack out, and a poll's range read
back only as rack names."""

from __future__ import annotations

import pytest

from provisioner.errors import InvalidInput
from provisioner.web.rackpages import RackRange, paginate


def test_racks_are_cut_into_pages_of_whole_racks_within_the_budget():
    sizes = {"r-b": 30, "r-a": 40, "r-c": 50, "r-d": 120, "r-e": 10}
    pages = paginate(sizes, budget=100)
    assert [p.racks for p in pages] == [("r-a", "r-b"), ("r-c",), ("r-d",), ("r-e",)]
    assert [p.nodes for p in pages] == [70, 50, 120, 10], "a rack larger than the budget is a page of its own"
    assert [p.number for p in pages] == [1, 2, 3, 4] and pages[0].label == "r-a … r-b" and pages[1].label == "r-c"
    # Every name, including racks born later, falls in exactly one page's range.
    for rack in ["a", "r-a", "r-b", "r-bb", "r-c", "r-cz", "r-d", "r-e", "z"]:
        assert sum(p.range.holds(rack) for p in pages) == 1, rack
    assert pages[0].range.holds("a") and pages[1].range.holds("r-cz") and pages[-1].range.holds("z")
    assert paginate({"r-a": 3, "r-b": 4}, budget=100)[0].range == RackRange("", ""), "one page holds every name"
    assert paginate({})[0].racks == () and paginate({})[0].label == "no rack"


def test_a_polls_range_is_rack_names_or_nothing():
    assert RackRange.parse({"from": "rack-1", "upto": ""}) == RackRange("rack-1", "")
    assert RackRange.parse({}) == RackRange()
    for bad in ({"from": "../x"}, {"upto": "Rack"}, {"from": "a" * 64}, {"upto": "<b>"}):
        with pytest.raises(InvalidInput):
            RackRange.parse(bad)
