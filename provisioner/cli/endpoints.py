"""CLI commands for role endpoints: list them with their members' health, swap two."""

from __future__ import annotations

import argparse

from ..client import Client
from ..display.output import print_json, table


def cmd_endpoints(client: Client, args: argparse.Namespace) -> int:
    docs = client.get("/v1/endpoints")["endpoints"]
    if args.json:
        print_json(docs)
        return 0
    table(["endpoint", "role", "vip", "port", "dns", "members"],
          [[e["name"], e["role"], e["vip"], f"{e['port']}/{e['protocol']}", e.get("dns") or "",
            ", ".join(f"{m['guest']} {m['address']}:{m['port']} {m['health']}" for m in e["members"]) or "-"]
           for e in docs])
    return 0


def cmd_swap(client: Client, args: argparse.Namespace) -> int:
    doc = client.post("/v1/endpoints/swap", {"roles": [args.role_a, args.role_b], "dry_run": args.dry_run})
    if args.json:
        print_json(doc)
        return 0
    for e in doc["endpoints"]:
        where = f"{e['name']} ({e['vip']}" + (f", {e['dns']}" if e.get("dns") else "") + ")"
        print(f"{where}: {e['role_before']} -> {e['role_after']}")
    print("dry run: nothing changed" if doc["dry_run"] else "swapped")
    return 0
