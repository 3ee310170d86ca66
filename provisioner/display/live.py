"""Progress of long work (enroll, inspect, reimage, rollback, deploy) for people. On a
terminal: one table redrawn in place, a progress bar per row that has one (rich's Live);
otherwise (a pipe, a CI log, a terminal without cursor movement: TERM=dumb): one plain
line per change of a row, with the time since the start. rich is used here and nowhere
else."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table


def can_redraw(out: TextIO) -> bool:
    """A terminal that can move its cursor: not a pipe, and not TERM=dumb (CI's, Emacs')."""
    return out.isatty() and os.environ.get("TERM", "") not in ("", "dumb")


@dataclass(frozen=True)
class Row:
    key: str  # what the row is about: a node's or a guest's name
    cells: tuple[str, ...]  # under the view's columns
    line: str  # the plain line for this state of the row
    done: float | None = None  # 0..1 when the row has a progress bar


class LiveView:
    def __init__(self, columns: tuple[str, ...], out: TextIO | None = None, tty: bool | None = None) -> None:
        self.out = out or sys.stderr
        self.columns = columns
        self.tty = can_redraw(self.out) if tty is None else tty
        self._seen: dict[str, str] = {}
        self._live: Live | None = None
        if self.tty:
            self._console = Console(file=self.out, force_terminal=True, highlight=False)
            self._live = Live(console=self._console, auto_refresh=False, transient=False,
                              vertical_overflow="visible")
            self._live.start()

    def update(self, rows: list[Row], elapsed: float) -> None:
        if self._live is not None:
            self._live.update(self._table(rows, elapsed), refresh=True)
            return
        for row in rows:
            if self._seen.get(row.key) != row.line:
                self._seen[row.key] = row.line
                self.out.write(f"[{elapsed:6.1f}s] {row.line}\n")
        self.out.flush()

    def _table(self, rows: list[Row], elapsed: float) -> Table:
        height = max(5, self._console.size.height - 4)
        table = Table(*self.columns, "progress", title=f"{elapsed:.0f}s", title_justify="left", box=None,
                      pad_edge=False, header_style="bold")
        for row in rows[:height]:
            bar = ProgressBar(total=1.0, completed=row.done, width=20) if row.done is not None else ""
            table.add_row(*row.cells, bar)
        if len(rows) > height:
            table.add_row(f"... {len(rows) - height} more", *[""] * len(self.columns))
        return table

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> "LiveView":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fraction(progress: dict[str, object] | None) -> float | None:
    """How far an agent's write has come, from its progress report."""
    if not progress:
        return None
    done, total = progress.get("bytes"), progress.get("total")
    if isinstance(done, int) and isinstance(total, int) and total > 0:
        return min(1.0, done / total)
    return None
