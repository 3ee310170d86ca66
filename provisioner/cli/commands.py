"""One function per CLI command: call the API, render the answer. No business logic."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from ..client import Client
from ..display.live import LiveView
from ..display.output import node_detail, node_row, node_rows, print_json, table, timestamp
from ..errors import InvalidInput, NotFound, ProvisionerError
from ..states import STABLE, State
from .inventory import load_inventory, read_password_file

_STABLE = {s.value for s in STABLE}
_POLL = 1.0


def _q(ident: str) -> str:
    return urllib.parse.quote(ident, safe="")


def wait_stable(client: Client, names: list[str], as_json: bool) -> list[dict[str, Any]]:
    """Poll until every named node is in a stable state, showing progress."""
    started = time.monotonic()
    with LiveView(("node", "rack", "state", "step")) as view:
        while True:
            nodes = [client.get(f"/v1/nodes/{_q(n)}") for n in names]
            if not as_json:
                view.update([node_row(n) for n in nodes], time.monotonic() - started)
            if all(n["state"] in _STABLE for n in nodes):
                return nodes
            time.sleep(_POLL)


def _finish(client: Client, names: list[str], args: argparse.Namespace, errors: list[str]) -> int:
    nodes = [client.get(f"/v1/nodes/{_q(n)}") for n in names]
    if not args.no_wait and names:
        nodes = wait_stable(client, names, args.json)
    if args.json:
        print_json({"nodes": nodes, "errors": errors})
    else:
        if nodes:
            table(*node_rows(nodes))
        for err in errors:
            sys.stderr.write(f"error: {err}\n")
    failed = [n for n in nodes if n["state"] != State.READY] if not args.no_wait else []
    return 1 if errors or failed else 0


def cmd_enroll(client: Client, args: argparse.Namespace) -> int:
    if args.from_file:
        if args.mac:
            raise InvalidInput("give either a MAC or --from FILE, not both")
        bodies = load_inventory(Path(args.from_file))
    else:
        if not args.mac:
            raise InvalidInput("enroll needs a MAC (or --from inventory.yaml)")
        missing = [f for f, v in (("--bmc", args.bmc), ("--bmc-user", args.bmc_user),
                                  ("--bmc-password-file", args.bmc_password_file),
                                  ("--rack", args.rack)) if not v]
        if missing:
            raise InvalidInput(f"enroll {args.mac} needs {', '.join(missing)}")
        body: dict[str, Any] = {"mac": args.mac, "rack": args.rack, "bmc": {
            "address": args.bmc, "username": args.bmc_user,
            "password": read_password_file(Path(args.bmc_password_file))}}
        if args.name:
            body["name"] = args.name
        if args.cipher_suite:
            body["bmc"]["cipher_suite"] = args.cipher_suite
        if args.bmc_driver:
            body["bmc"]["driver"] = args.bmc_driver
        if args.bmc_system:
            body["bmc"]["system"] = args.bmc_system
        bodies = [body]
    names, errors = [], []
    for body in bodies:
        body["inspect"] = not args.no_inspect
        try:
            node = client.post("/v1/nodes", body)
            names.append(node["name"])
            if not args.json:
                sys.stderr.write(f"enrolled {node['name']} ({node['mac']}) in {node['rack']}\n")
        except ProvisionerError as exc:
            if len(bodies) == 1:
                raise
            errors.append(f"{body['mac']}: {exc}")
    if args.no_inspect:
        args.no_wait = True
    return _finish(client, names, args, errors)


def cmd_inspect(client: Client, args: argparse.Namespace) -> int:
    node = client.post(f"/v1/nodes/{_q(args.node)}/inspect")
    return _finish(client, [node["name"]], args, [])


def all_nodes(client: Client, query: str = "") -> list[dict[str, Any]]:
    """Every node the query selects, page after page (each page one indexed read)."""
    nodes: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.get("/v1/nodes?" + "&".join(p for p in (query, f"cursor={cursor}" if cursor else "") if p))
        nodes += page["nodes"]
        cursor = page.get("next")
        if not cursor:
            return nodes


def cmd_nodes(client: Client, args: argparse.Namespace) -> int:
    query = "&".join(f"{k}={_q(v)}" for k, v in (("rack", args.rack), ("tag", args.tag),
                                                   ("state", args.state)) if v)
    doc: dict[str, Any] = {"nodes": all_nodes(client, query)}
    if args.json:
        print_json(doc)
    elif doc["nodes"]:
        table(*node_rows(doc["nodes"]))
    else:
        sys.stderr.write("no nodes enrolled: see 'provisioner enroll --help'\n")
    return 0


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    node = client.get(f"/v1/nodes/{_q(args.node)}")
    print_json(node) if args.json else node_detail(node)
    return 0


def cmd_label(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, object] = {"add_tags": args.tag, "remove_tags": args.untag}
    if args.upgrade_domain is not None:
        ud = args.upgrade_domain
        body["upgrade_domain"] = ud if ud == "auto" else _int(ud, "--upgrade-domain")
    node = client.post(f"/v1/nodes/{_q(args.node)}/labels", body)
    if args.json:
        print_json(node)
    else:
        ud = node.get("upgrade_domain")
        print(f"{node['name']}: tags {', '.join(node['tags']) or '-'}; upgrade domain "
              f"{'auto' if ud is None else ud}")
    return 0


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise InvalidInput(f"{what} must be a number or 'auto', not {text!r}") from exc


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    doc = client.get(f"/v1/nodes/{_q(args.node)}/events")
    if args.json:
        print_json(doc)
        return 0
    rows = []
    for e in doc["events"]:
        change = e["to_state"] if e["from_state"] in (None, e["to_state"]) else f"{e['from_state']} -> {e['to_state']}"
        rows.append([timestamp(e["ts"]), e["event"], change, e.get("step") or "", e.get("message") or ""])
    table(["time", "event", "state", "step", "message"], rows)
    return 0


def cmd_console(client: Client, args: argparse.Namespace) -> int:
    """A node's console log; a name no node has may be a guest's."""
    try:
        client.get(f"/v1/nodes/{_q(args.node)}")
        path = f"/v1/nodes/{_q(args.node)}/console?bytes={args.bytes}"
    except NotFound:
        try:
            client.get(f"/v1/guests/{_q(args.node)}")
        except NotFound:
            raise NotFound(f"no node or guest {args.node}") from None
        path = f"/v1/guests/{_q(args.node)}/console?bytes={args.bytes}"
    doc = client.get(path)
    print_json(doc) if args.json else sys.stdout.write(doc["text"])
    return 0


def cmd_power(client: Client, args: argparse.Namespace) -> int:
    doc = client.post("/v1/power", {"target": args.target, "action": args.action})
    if args.json:
        print_json(doc)
    else:
        table(["node", "power", "result"],
              [[r["node"], r.get("power_state", ""), "ok" if r["ok"] else r["error"]] for r in doc["results"]])
    return 0 if all(r["ok"] for r in doc["results"]) else 1


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    doc = client.delete(f"/v1/nodes/{_q(args.node)}")
    print_json(doc) if args.json else sys.stderr.write(f"deleted {args.node}\n")
    return 0


def cmd_discovered(client: Client, args: argparse.Namespace) -> int:
    doc = client.get("/v1/discovered")
    if args.json:
        print_json(doc)
    else:
        table(["mac", "first seen", "last seen", "count"],
              [[d["mac"], timestamp(d["first_seen"]), timestamp(d["last_seen"]), d["seen_count"]]
               for d in doc["discovered"]])
    return 0
