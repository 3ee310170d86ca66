"""The racks page, cut into pages of whole racks so that no page draws more than a few
hundred tiles however large the fleet: racks in name order, a new page started when the
next rack would take the page past its budget (a rack larger than the budget is a page of
its own). A page holds a range of rack names: its live poll keeps to that range, and a
rack enrolled later whose name falls in it appears on that page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..models import validate_name

TILES_PER_PAGE = 500


@dataclass(frozen=True)
class RackRange:
    """Rack names from `first` (included) up to `upto` (excluded); "" leaves that end open."""
    first: str = ""
    upto: str = ""

    def holds(self, rack: str) -> bool:
        return rack >= self.first and (not self.upto or rack < self.upto)

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> "RackRange":
        """The range a poll carries (?from=&upto=): rack names or empty, nothing else."""
        first, upto = query.get("from", ""), query.get("upto", "")
        return cls(first and validate_name(first, "rack"), upto and validate_name(upto, "rack"))


@dataclass(frozen=True)
class RackPage:
    number: int  # from 1
    racks: tuple[str, ...]
    nodes: int
    range: RackRange

    @property
    def label(self) -> str:
        if len(self.racks) <= 1:
            return self.racks[0] if self.racks else "no rack"
        return f"{self.racks[0]} … {self.racks[-1]}"


def paginate(sizes: Mapping[str, int], budget: int | None = None) -> list[RackPage]:
    """Pages of whole racks, from each rack's node count; one empty page when there is no rack."""
    budget = budget or TILES_PER_PAGE
    groups: list[list[str]] = []
    filled = 0
    for rack in sorted(sizes):
        if not groups or (filled > 0 and filled + sizes[rack] > budget):
            groups.append([])
            filled = 0
        groups[-1].append(rack)
        filled += sizes[rack]
    if not groups:
        return [RackPage(1, (), 0, RackRange())]
    pages = []
    for i, group in enumerate(groups):
        # The first page also holds names before its first rack; the last, every later one.
        span = RackRange("" if i == 0 else group[0], groups[i + 1][0] if i + 1 < len(groups) else "")
        pages.append(RackPage(i + 1, tuple(group), sum(sizes[r] for r in group), span))
    return pages
