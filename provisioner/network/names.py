"""Names under dns.domain for every node, host, guest and role endpoint, as a hosts file
our dnsmasq reads (addn-hosts, read again on SIGHUP). Built whole from the database at
each change and written only when it differs; a name taken twice keeps its first owner
(nodes, then hosts, then guests, then endpoints) and the clash is logged."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable, Iterable

LOG = logging.getLogger(__name__)

Record = tuple[str, str]  # (name, address)


def hosts_text(domain: str, groups: Iterable[Iterable[Record]]) -> str:
    seen: dict[str, str] = {}
    lines = []
    for group in groups:
        for name, address in group:
            if not address:
                continue
            if name in seen:
                if seen[name] != address:
                    LOG.warning("dns: %s is taken (%s); not also %s", name, seen[name], address)
                continue
            seen[name] = address
            lines.append(f"{address} {name}.{domain} {name}\n")
    return "".join(lines)


class NameService:
    def __init__(self, domain: str, path: Path, collect: Callable[[], list[list[Record]]],
                 reload: Callable[[], None]) -> None:
        self.domain = domain
        self.path = path
        self.collect = collect
        self.reload = reload
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Write the records and have dnsmasq read them, if they changed."""
        with self._lock:
            text = hosts_text(self.domain, self.collect())
            if self.path.exists() and self.path.read_text() == text:
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.path)
        self.reload()
        LOG.info("dns: %d names under %s", text.count("\n"), self.domain)
        return True
