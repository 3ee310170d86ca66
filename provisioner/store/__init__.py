"""The only module that speaks SQL: SQLite in WAL mode, schema migrations, and
atomic state transitions recorded in each node's history."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from .. import states
from ..agent.protocol import CommandKind, CommandStatus
from ..errors import Conflict, InvalidTransition, NotFound
from ..models import BmcDriver, Node
from ..states import Event, State, Step
from .images import ImageRows
from .guests import GuestRows
from .jobs import JobRows
from .base import SqlBase
from .controllers import ControllerRows
from .tallies import TallyRows
from .nights import NightRows
from .engines import Connection

LOG = logging.getLogger(__name__)

_NODE_COLUMNS = (
    "id, name, mac, rack, bmc_address, bmc_port, bmc_username, cipher_suite, state, step, "
    "target_state, deadline, last_error, power_state, agent_last_seen, boot_count, inspection, "
    "created_at, updated_at, image_sha256, previous_image_sha256, host_last_seen, host_facts, "
    "host_key, host_lost, job_id, upgrade_domain, deploy_sha256, deploy_no_transfer, tags, "
    "bmc_driver, bmc_system, secure_boot"
)


def _node(row: Any) -> Node:
    return Node(
        id=row["id"], name=row["name"], mac=row["mac"], rack=row["rack"],
        bmc_address=row["bmc_address"], bmc_port=row["bmc_port"],
        bmc_username=row["bmc_username"], cipher_suite=row["cipher_suite"],
        state=State(row["state"]), step=Step(row["step"]) if row["step"] else None,
        target_state=State(row["target_state"]) if row["target_state"] else None,
        deadline=row["deadline"], last_error=row["last_error"], power_state=row["power_state"],
        agent_last_seen=row["agent_last_seen"], boot_count=row["boot_count"],
        inspection=json.loads(row["inspection"]) if row["inspection"] else None,
        created_at=row["created_at"], updated_at=row["updated_at"],
        image_sha256=row["image_sha256"], previous_image_sha256=row["previous_image_sha256"],
        host_last_seen=row["host_last_seen"],
        host_facts=json.loads(row["host_facts"]) if row["host_facts"] else None,
        host_key=row["host_key"], host_lost=bool(row["host_lost"]), job_id=row["job_id"],
        upgrade_domain=row["upgrade_domain"], deploy_sha256=row["deploy_sha256"],
        deploy_no_transfer=bool(row["deploy_no_transfer"]), tags=json.loads(row["tags"]),
        bmc_driver=BmcDriver(row["bmc_driver"]), bmc_system=row["bmc_system"],
        secure_boot=bool(row["secure_boot"]),
    )


_UPDATABLE = {"power_state", "agent_last_seen", "inspection", "agent_token_hash", "boot_count",
              "image_sha256", "previous_image_sha256", "host_token_hash", "host_last_seen",
              "host_facts", "host_key", "host_lost", "upgrade_domain", "deploy_sha256",
              "deploy_no_transfer", "tags"}


def _set_values(db: Connection, node_id: int, values: dict[str, Any]) -> None:
    if set(values) - _UPDATABLE:
        raise ValueError(f"cannot update {sorted(set(values) - _UPDATABLE)}")
    values = dict(values)
    for key in ("inspection", "host_facts", "tags"):
        if key in values and values[key] is not None:
            values[key] = json.dumps(values[key], sort_keys=True)
    cols = ", ".join(f"{k} = ?" for k in values)
    db.execute(f"UPDATE nodes SET {cols}, updated_at = ? WHERE id = ?", (*values.values(), time.time(), node_id))


class Store(ImageRows, JobRows, GuestRows, ControllerRows, TallyRows, NightRows, SqlBase):
    """Thread-safe access to the database; every write is one transaction."""

    # -- nodes ----------------------------------------------------------------
    def create_node(self, *, name: str, mac: str, rack: str, bmc_address: str, bmc_port: int,
                    bmc_username: str, bmc_password_sealed: str, cipher_suite: int,
                    bmc_driver: BmcDriver = BmcDriver.IPMI, bmc_system: str | None = None,
                    secure_boot: bool = False) -> Node:
        now = time.time()
        with self._tx() as db:
            clash = db.execute("SELECT name, mac FROM nodes WHERE mac = ? OR name = ?",
                               (mac, name)).fetchone()
            if clash is not None:
                if clash["mac"] == mac:
                    raise Conflict(f"MAC {mac} is already enrolled as node {clash['name']}")
                raise Conflict(f"a node named {name} already exists")
            cur = db.execute(
                "INSERT INTO nodes (name, mac, rack, bmc_address, bmc_port, bmc_username, "
                "bmc_password_sealed, cipher_suite, bmc_driver, bmc_system, secure_boot, state, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (name, mac, rack, bmc_address, bmc_port, bmc_username, bmc_password_sealed,
                 cipher_suite, bmc_driver.value, bmc_system, int(secure_boot), State.ENROLLED.value, now, now),
            )
            node_id = int(cur.fetchone()[0])
            self._event(db, node_id, now, "enroll", None, State.ENROLLED.value, None, f"enrolled in {rack}")
        LOG.info("node %s (%s): enrolled in %s", name, mac, rack)
        return self.node_by_id(node_id)

    def get_node(self, ident: str) -> Node:
        """A node by name, MAC or id, each looked up through its own index (a name
        wins over an id that reads the same)."""
        rows = self._query(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE name = ?", (ident,))
        if not rows and ":" in ident:
            rows = self._query(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE mac = ?", (ident.lower(),))
        if not rows and ident.isdigit() and len(ident) < 19:
            rows = self._query(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE id = ?", (int(ident),))
        if not rows:
            raise NotFound(f"no node named {ident!r}: see 'provisioner nodes'")
        return _node(rows[0])

    def node_by_id(self, node_id: int) -> Node:
        rows = self._query(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE id = ?", (node_id,))
        if not rows:
            raise NotFound(f"node {node_id} was deleted")
        return _node(rows[0])

    def node_state(self, node_id: int) -> State | None:
        """Only the node's state (None: deleted): what a waiter reads."""
        rows = self._query("SELECT state FROM nodes WHERE id = ?", (node_id,))
        return State(rows[0][0]) if rows else None

    def name_taken(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM nodes WHERE name = ?", (name,)))

    def find_node_by_mac(self, mac: str) -> Node | None:
        rows = self._query(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE mac = ?", (mac,))
        return _node(rows[0]) if rows else None

    def list_nodes(self, rack: str | None = None) -> list[Node]:
        if rack:
            rows = self._query(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE rack = ? ORDER BY name", (rack,))
        else:
            rows = self._query(f"SELECT {_NODE_COLUMNS} FROM nodes ORDER BY rack, name")
        return [_node(r) for r in rows]

    def page_nodes(self, *, rack: str | None = None, state: str | None = None, tag: str | None = None,
                   after: tuple[str, str] | None = None, limit: int = 500) -> list[Node]:
        """Up to `limit` nodes in (rack, name) order after the cursor `after`, filtered;
        each page is one indexed range read, however large the fleet."""
        where, args = [], []  # type: tuple[list[str], list[Any]]
        if rack:
            where.append("rack = ?")
            args.append(rack)
        if state:
            where.append("state = ?")
            args.append(state)
        if tag:
            # The JSON array holds the tag in quotes; LIKE's wildcards in it are escaped.
            escaped = tag.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("tags LIKE ? ESCAPE '\\'")
            args.append(f'%"{escaped}"%')
        if after is not None:
            where.append("(rack, name) > (?, ?)")
            args += [after[0], after[1]]
        sql = (f"SELECT {_NODE_COLUMNS} FROM nodes" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY rack, name LIMIT ?")
        return [_node(r) for r in self._query(sql, (*args, limit))]

    def count_nodes(self, state: State) -> int:
        return int(self._query("SELECT COUNT(*) FROM nodes WHERE state = ?", (state.value,))[0][0])

    def silent_hosts(self, seen_before: float) -> list[Node]:
        """Active hosts not marked lost whose agent was last heard before `seen_before`."""
        rows = self._query(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE state = ? AND host_lost = 0 "
                           "AND host_last_seen < ?", (State.ACTIVE.value, seen_before))
        return [_node(r) for r in rows]

    def nodes_in(self, states_: tuple[State, ...], *, host_lost: bool | None = None) -> list[Node]:
        """Nodes in these states (and, if given, with host_lost so), by the state index."""
        marks = ",".join("?" for _ in states_)
        sql = f"SELECT {_NODE_COLUMNS} FROM nodes WHERE state IN ({marks})"
        args: list[Any] = [s.value for s in states_]
        if host_lost is not None:
            sql += " AND host_lost = ?"
            args.append(int(host_lost))
        return [_node(r) for r in self._query(sql, tuple(args))]

    def node_addresses(self) -> list[tuple[int, str, str, str]]:
        """(id, MAC, name, rack) of every node: what DHCP's hosts file needs, nothing more."""
        return [(r[0], r[1], r[2], r[3]) for r in self._query("SELECT id, mac, name, rack FROM nodes ORDER BY id")]

    def racks(self) -> list[str]:
        return [r[0] for r in self._query("SELECT DISTINCT rack FROM nodes ORDER BY rack")]

    def sealed_password(self, node_id: int) -> str:
        return str(self._query("SELECT bmc_password_sealed FROM nodes WHERE id = ?", (node_id,))[0][0])

    def delete_node(self, node: Node) -> None:
        with self._tx() as db:
            row = db.execute("SELECT state FROM nodes WHERE id = ?", (node.id,)).fetchone()
            if row is None:
                raise NotFound(f"no node named {node.name!r}")
            if State(row["state"]) not in states.DELETABLE:
                raise InvalidTransition(node=node.name, event="be deleted", state=row["state"])
            db.execute("DELETE FROM nodes WHERE id = ?", (node.id,))
            self._moved(node.id)
        LOG.info("node %s: deleted", node.name)

    def update_node(self, node_id: int, **values: Any) -> None:
        if not values:
            raise ValueError("nothing to update")
        with self._tx() as db:
            _set_values(db, node_id, values)

    def token_hash(self, node_id: int) -> str | None:
        rows = self._query("SELECT agent_token_hash FROM nodes WHERE id = ?", (node_id,))
        return rows[0][0] if rows else None

    def node_by_token_hash(self, token_hash: str) -> Node | None:
        rows = self._query(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE agent_token_hash = ?", (token_hash,))
        return _node(rows[0]) if rows else None

    def node_by_host_token_hash(self, token_hash: str) -> Node | None:
        rows = self._query(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE host_token_hash = ?", (token_hash,))
        return _node(rows[0]) if rows else None

    def nodes_with_image(self, sha256: str) -> list[str]:
        rows = self._query("SELECT name FROM nodes WHERE image_sha256 = ? OR previous_image_sha256 = ? "
                           "ORDER BY name", (sha256, sha256))
        return [r[0] for r in rows]

    def issue_token(self, node_id: int, token_hash: str) -> bool:
        """Store a token hash only if none is set for this boot; False if one already is."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE nodes SET agent_token_hash = ?, updated_at = ? "
                "WHERE id = ? AND agent_token_hash IS NULL", (token_hash, time.time(), node_id))
            return cur.rowcount == 1

    def withdraw_token(self, node_id: int, token_hash: str) -> None:
        """Undo issue_token, if that token is still the one set."""
        with self._tx() as db:
            db.execute("UPDATE nodes SET agent_token_hash = NULL, updated_at = ? "
                       "WHERE id = ? AND agent_token_hash = ?", (time.time(), node_id, token_hash))

    # -- transitions ----------------------------------------------------------
    def transition(self, node: Node, event: Event, *, step: Step | None = None,
                   deadline: float | None = None, error: str | None = None,
                   message: str | None = None, values: dict[str, Any] | None = None) -> Node:
        """Apply `event` to the node atomically, as the transition table allows, with
        `values` (as update_node takes them) written in the same transaction."""
        with self._tx() as db:
            row = db.execute("SELECT state FROM nodes WHERE id = ?", (node.id,)).fetchone()
            if row is None:
                raise NotFound(f"no node named {node.name!r}")
            current = State(row["state"])
            new = states.next_state(current, event)
            if new is None:
                raise InvalidTransition(node=node.name, event=event.value, state=current.value)
            target = states.IN_PROGRESS.get(new)
            now = time.time()
            db.execute(
                "UPDATE nodes SET state = ?, step = ?, target_state = ?, deadline = ?, "
                "last_error = CASE WHEN ? THEN ? ELSE NULL END, updated_at = ? WHERE id = ?",
                (new.value, step.value if step and target else None,
                 target.value if target else None, deadline if target else None,
                 new in states.REASONED, error, now, node.id),
            )
            if values:
                _set_values(db, node.id, values)
            self._event(db, node.id, now, event.value, current.value, new.value,
                        step.value if step else None, error or message)
            self._moved(node.id)
        self.on_move(node.id, current.value, new.value, step.value if step and target else None)
        LOG.info("node %s: %s -> %s%s", node.name, current, new,
                 f" ({error or message})" if (error or message) else "")
        return self.node_by_id(node.id)

    def set_step(self, node: Node, step: Step, deadline: float, *, expect_state: State,
                 message: str | None = None) -> Node:
        """Move an in-progress node to its next step (and deadline), recorded in history."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE nodes SET step = ?, deadline = ?, updated_at = ? WHERE id = ? AND state = ?",
                (step.value, deadline, time.time(), node.id, expect_state.value))
            if cur.rowcount != 1:
                raise InvalidTransition(node=node.name, event=f"start {step}", state="not " + expect_state.value)
            self._event(db, node.id, time.time(), "step", expect_state.value, expect_state.value, step.value,
                        message)
        self.on_move(node.id, expect_state.value, expect_state.value, step.value)
        LOG.info("node %s: %s: %s", node.name, expect_state, step)
        return self.node_by_id(node.id)

    def extend_deadline(self, node: Node, deadline: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE nodes SET deadline = CASE WHEN COALESCE(deadline, 0) < ? THEN ? ELSE deadline END "
                       "WHERE id = ? AND step = ?", (deadline, deadline, node.id, node.step.value if node.step else None))

    def record_event(self, node: Node, event: str, message: str) -> None:
        with self._tx() as db:
            self._event(db, node.id, time.time(), event, node.state.value, node.state.value,
                        node.step.value if node.step else None, message)

    def _event(self, db: Connection, node_id: int, ts: float, event: str, from_state: str | None,
               to_state: str | None, step: str | None, message: str | None) -> None:
        """One line of the node's history, signed by this controller."""
        db.execute("INSERT INTO events (node_id, ts, event, from_state, to_state, step, message, controller) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (node_id, ts, event, from_state, to_state, step, message, self.controller))
        self._evented()

    def feed(self, after: int, limit: int, node_id: int | None = None) -> list[dict[str, Any]]:
        """Events after the cursor `after` (an event id), oldest first, with their node's
        name: the fleet's changes as they happen (or one node's)."""
        sql = ("SELECT e.id, n.name AS node, e.ts, e.event, e.from_state, e.to_state, e.step, e.message, "
               "e.controller "
               "FROM events e JOIN nodes n ON n.id = e.node_id WHERE e.id > ?")
        args: tuple[Any, ...] = (after,)
        if node_id is not None:
            sql += " AND e.node_id = ?"
            args += (node_id,)
        return [dict(r) for r in self._query(sql + " ORDER BY e.id LIMIT ?", (*args, limit))]

    def last_event_id(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(id), 0) FROM events")[0][0])

    def events(self, node: Node) -> list[dict[str, Any]]:
        rows = self._query("SELECT ts, event, from_state, to_state, step, message, controller FROM events "
                           "WHERE node_id = ? ORDER BY id", (node.id,))
        return [dict(r) for r in rows]

    def in_progress(self, *, overdue_at: float | None = None, steps: tuple[Step, ...] = ()) -> list[Node]:
        """Nodes in progress (by the state index); only those whose deadline is at or
        before `overdue_at`, or only those at one of `steps`, when given."""
        marks = ",".join("?" for _ in states.IN_PROGRESS)
        sql = f"SELECT {_NODE_COLUMNS} FROM nodes WHERE state IN ({marks})"
        args: list[Any] = [s.value for s in states.IN_PROGRESS]
        if overdue_at is not None:
            sql += " AND deadline IS NOT NULL AND deadline <= ?"
            args.append(overdue_at)
        if steps:
            sql += f" AND step IN ({','.join('?' for _ in steps)})"
            args += [s.value for s in steps]
        return [_node(r) for r in self._query(sql, tuple(args))]

    # -- agent commands -------------------------------------------------------
    def add_command(self, node: Node, command_id: str, kind: CommandKind,
                    args_sealed: str | None = None) -> dict[str, Any]:
        """Queue a command; its arguments are stored sealed (they may carry credentials)."""
        now = time.time()
        with self._tx() as db:
            db.execute("INSERT INTO commands (id, node_id, kind, status, created_at, updated_at, "
                       "args_sealed) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (command_id, node.id, kind, CommandStatus.PENDING, now, now, args_sealed))
        return self.command(command_id)

    def command(self, command_id: str) -> dict[str, Any]:
        rows = self._query("SELECT id, node_id, kind, status, created_at, updated_at, result "
                           "FROM commands WHERE id = ?", (command_id,))
        if not rows:
            raise NotFound(f"no command {command_id!r}")
        out = dict(rows[0])
        out["result"] = json.loads(out["result"]) if out["result"] else None
        return out

    def last_command(self, node_id: int, kind: CommandKind,
                     status: CommandStatus = CommandStatus.DONE) -> dict[str, Any] | None:
        """The node's newest command of `kind` in `status` ('running': with its last progress)."""
        rows = self._query("SELECT id FROM commands WHERE node_id = ? AND kind = ? AND status = ? "
                           "ORDER BY updated_at DESC LIMIT 1", (node_id, kind, status))
        return self.command(rows[0][0]) if rows else None

    def pending_commands(self, node: Node) -> list[dict[str, Any]]:
        rows = self._query("SELECT id, kind, args_sealed FROM commands WHERE node_id = ? AND status IN "
                           "(?, ?) ORDER BY created_at", (node.id, CommandStatus.PENDING, CommandStatus.SENT))
        return [dict(r) for r in rows]

    def supersede_running(self, node_id: int, kind: CommandKind) -> int:
        """Commands of `kind` an earlier boot of the node was carrying out: that boot is
        gone (a new one asked for work), so they will never end; the number superseded."""
        with self._tx() as db:
            cur = db.execute("UPDATE commands SET status = ?, updated_at = ? WHERE node_id = ? AND kind = ? "
                             "AND status = ?", (CommandStatus.SUPERSEDED, time.time(), node_id, kind,
                                                CommandStatus.RUNNING))
            return cur.rowcount

    def set_command_status(self, command_id: str, status: CommandStatus, result: Any = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE commands SET status = ?, result = ?, updated_at = ? WHERE id = ?",
                       (status, json.dumps(result) if result is not None else None, time.time(),
                        command_id))

    # -- discovered MACs ------------------------------------------------------
    def record_discovered(self, mac: str, when: float | None = None) -> None:
        now = when or time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO discovered (mac, first_seen, last_seen, seen_count) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (mac) DO UPDATE SET last_seen = excluded.last_seen, "
                "seen_count = discovered.seen_count + 1", (mac, now, now))

    def discovered(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT mac, first_seen, last_seen, seen_count FROM discovered "
                           "WHERE mac NOT IN (SELECT mac FROM nodes) ORDER BY last_seen DESC")
        return [dict(r) for r in rows]
