"""The `provisioner lab` subcommands (run locally, as root: no daemon involved)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from ..display.output import print_json, table
from .lab import Lab


def _say(msg: str) -> None:
    sys.stderr.write(f"lab: {msg}\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    lab = Lab()
    if args.lab_command == "up":
        lab.up(nodes=args.nodes, racks=args.racks, memory_mib=args.memory, vcpus=args.vcpus,
               disk_gib=args.disk, firmware="uefi" if args.uefi else args.firmware, bmc=args.bmc,
               secure_boot=args.secure_boot,
               progress=None if args.json else _say, vagrant=args.vagrant, database=args.database)
        if args.json:
            pass
        elif args.vagrant:
            _say("up: now 'vagrant up' makes the nodes, then "
                 f"'provisioner enroll --from {lab.inventory_file}'")
        else:
            _say(f"up: enroll the nodes with 'provisioner enroll --from {lab.inventory_file}'")
    if args.lab_command == "adopt":
        node = lab.adopt(args.name, args.rack, progress=None if args.json else _say)
        if args.json:
            print_json(asdict(node))
        return 0
    if args.lab_command in ("up", "status"):
        doc = lab.status()
        if args.json:
            print_json(doc)
        elif not doc["up"]:
            sys.stdout.write("the lab is down\n")
        else:
            sys.stdout.write(f"namespace {doc['namespace']}, bridge {doc['bridge']}, daemon {doc['daemon']}, "
                             f"vbmcd {doc['vbmcd']}\ninventory {doc['inventory']}\n"
                             + (f"dashboard {doc['dashboard']}\n" if doc.get("dashboard") else ""))
            table(["name", "mac", "rack", "domain", "bmc", "memory", "vcpus", "firmware"],
                  [[n["name"], n["mac"], n["rack"], n["domain"], n["bmc"], f"{n['memory_mib']} MiB",
                    n["vcpus"], "uefi" if n["uefi"] else "bios"] for n in doc["nodes"]])
        return 0
    lab.down()
    if not args.json:
        _say("down: nothing left behind")
    return 0
