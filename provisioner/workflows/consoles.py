"""Nodes' serial console logs: whatever writes them (the lab's domains, a console server
in a hardware lab), the daemon finds each at consoles.node_log and reads its tail."""

from __future__ import annotations

import re
from pathlib import Path

from ..config import Settings
from ..errors import NotFound

# Terminal control sequences (firmware menus, colours, cursor moves) and stray controls:
# noise in a log someone reads or a report quotes.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1bc|[\x00-\x08\x0b-\x1f\x7f]")


def readable(raw: bytes) -> str:
    """Console bytes as text: decoded leniently, control sequences removed, CRLF folded."""
    return _CONTROL.sub("", raw.decode(errors="replace").replace("\r\n", "\n"))


def tail_bytes(path: Path, max_bytes: int) -> bytes:
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        data = f.read(max_bytes)
    if size > max_bytes:  # start on a whole line
        cut = data.find(b"\n")
        data = data[cut + 1:] if cut >= 0 else data
    return data


class Consoles:
    def __init__(self, settings: Settings) -> None:
        self.template = settings.consoles_node_log

    def path(self, node: str) -> Path:
        return Path(self.template.replace("{node}", node))

    def tail(self, node: str, max_bytes: int = 64 * 1024) -> dict[str, object]:
        path = self.path(node)
        try:
            raw = tail_bytes(path, max_bytes)
        except FileNotFoundError:
            raise NotFound(f"no console log for {node} at {path} (consoles.node_log: the lab writes "
                           "one per node; in a hardware lab, a console server must)") from None
        return {"node": node, "path": str(path), "text": readable(raw)}
