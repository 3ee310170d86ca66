"""The database connection (SQLite, or PostgreSQL for several controllers: engines.py),
one lock, one transaction per write, the schema migrations applied at open, and the
signals a committed change sends (so whoever waits for a node or for the event feed is
woken, not left polling)."""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .engines import Connection, connect, describe
from .schema import MIGRATIONS

LOG = logging.getLogger(__name__)


class SqlBase:
    """The connection and its transactions; the row classes build on it."""

    def __init__(self, path: Path | str) -> None:
        """`path`: a SQLite file, or a PostgreSQL URL (postgresql://...)."""
        self.path = str(path)
        self._lock = threading.RLock()
        self._db: Connection = connect(self.path)
        self.controller: str | None = None  # this daemon's name among the fleet's controllers
        self.lease_seconds = 15.0  # how long a claim (a rack, a job) holds without renewal
        # Signals of committed changes: nodes whose state moved, and new events.
        self._changed = threading.Condition()
        self._node_waits: dict[int, list[threading.Event]] = {}
        self._pending_nodes: set[int] = set()
        self._pending_events = False
        self._generation = 0
        # Told of each committed move of a node: (node id, from state, to state, step it
        # entered or None); a step within a state has from == to. The metrics listen.
        self.on_move: Callable[[int, str, str, str | None], None] = lambda *moved: None
        self.migrate()

    @property
    def engine(self) -> str:
        return self._db.kind

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._lock:
            self._db.begin_write()
            try:
                yield self._db
            except BaseException:
                self._db.rollback()
                self._pending_nodes.clear()
                self._pending_events = False
                raise
            self._db.commit()
            nodes, events = set(self._pending_nodes), self._pending_events
            self._pending_nodes.clear()
            self._pending_events = False
        if nodes or events:
            self._signal(nodes, events)

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- change signals ---------------------------------------------------------
    def _moved(self, node_id: int) -> None:
        """Inside a transaction: this node's state changes when it commits."""
        self._pending_nodes.add(node_id)

    def _evented(self) -> None:
        """Inside a transaction: it adds to the event feed."""
        self._pending_events = True

    def _signal(self, nodes: set[int], events: bool) -> None:
        with self._changed:
            for node_id in nodes:
                for waiter in self._node_waits.pop(node_id, []):
                    waiter.set()
            if events:
                self._generation += 1
                self._changed.notify_all()

    @contextmanager
    def watching(self, node_id: int) -> Iterator[threading.Event]:
        """An event set when the node's state changes in this process. Read the node
        after entering, then wait on it: no change between the read and the wait is
        missed. A change made elsewhere (another controller) is seen at the wait's timeout."""
        waiter = threading.Event()
        with self._changed:
            self._node_waits.setdefault(node_id, []).append(waiter)
        try:
            yield waiter
        finally:
            with self._changed:
                waits = self._node_waits.get(node_id, [])
                if waiter in waits:
                    waits.remove(waiter)
                    if not waits:
                        self._node_waits.pop(node_id, None)

    def wake_all(self) -> None:
        """Wake every waiter now (the daemon is stopping)."""
        with self._changed:
            for waits in self._node_waits.values():
                for waiter in waits:
                    waiter.set()
            self._generation += 1
            self._changed.notify_all()

    @property
    def event_generation(self) -> int:
        """How many commits added events in this process: read before the feed, then
        wait_events(generation) sleeps only if nothing came since."""
        return self._generation

    def wait_events(self, generation: int, timeout: float) -> bool:
        """Wait until an event newer than `generation` is recorded; False at the timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._generation != generation, timeout)

    # -- schema ---------------------------------------------------------------
    def schema_version(self) -> int:
        with self._lock:
            return self._db.schema_version()

    def migrate(self) -> None:
        with self._lock:
            current = self.schema_version()
            for version, script in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                LOG.info("database %s: migrating schema to version %d", describe(self.path), version)
                self._db.apply_migration(version, script)
