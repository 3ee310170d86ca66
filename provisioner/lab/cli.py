"""The `provisioner lab` subcommands (run locally, as root: no daemon involved)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from ..display.output import print_json, table
from .instances import DEFAULT_NAME, check_name
from .lab import Lab, every_lab
from . import sshd
from .margins import lab_margins


def _say(msg: str) -> None:
    sys.stderr.write(f"lab: {msg}\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    name = check_name(args.name or DEFAULT_NAME)
    lab = Lab(name)
    api = "" if name == DEFAULT_NAME else f"--api unix://{lab.cfg.socket} "  # how the CLI reaches its daemon
    if args.lab_command == "up":
        lab.up(nodes=args.nodes, racks=args.racks, memory_mib=args.memory, vcpus=args.vcpus,
               disk_gib=args.disk, firmware="uefi" if args.uefi else args.firmware, bmc=args.bmc,
               secure_boot=args.secure_boot,
               progress=None if args.json else _say, vagrant=args.vagrant, database=args.database)
        if args.json:
            pass
        elif args.vagrant:
            _say(f"up: now 'vagrant up' makes the nodes, then 'provisioner {api}enroll --from {lab.inventory_file}'")
        else:
            _say(f"up: enroll the nodes with 'provisioner {api}enroll --from {lab.inventory_file}'")
    if args.lab_command == "adopt":
        node = lab.adopt(args.domain, args.rack, progress=None if args.json else _say)
        if args.json:
            print_json(asdict(node))
        return 0
    if args.lab_command == "host":
        doc = sshd.register(lab, args.host_name)
        if args.json:
            print_json(doc)
        else:
            _say(f"host {doc['name']} registered: this machine at {doc['address']} ({doc['rack']}, {doc['cores']} cores, "
                 f"{doc['memory_mib']} MiB), the lab's own libvirtd")
        return 0
    if args.lab_command == "margins":
        return _margins(lab, args.top, args.json)
    if args.lab_command == "up" or (args.lab_command == "status" and args.name):
        _show([lab.status()], args.json)
        return 0
    if args.lab_command == "status":
        _show([each.status() for each in every_lab()], args.json, every=True)
        return 0
    labs = every_lab() if args.all else [lab]
    for each in labs:
        each.down()
        if not args.json:
            _say(f"down: lab {each.cfg.name}: nothing left behind")
    if args.json:
        print_json({"down": [each.cfg.name for each in labs]})
    return 0


def _margins(lab: Lab, top: int, as_json: bool) -> int:
    found = lab_margins(lab)
    if as_json:
        print_json([{"share": round(m.share, 3), "what": m.what, "seconds": round(m.seconds, 1),
                     "deadline": m.deadline} for m in found])
        return 0
    if lab.load() is None:
        sys.stdout.write(f"lab {lab.cfg.name} is down\n")
        return 1
    over = [m for m in found if m.share > 1 / 3]
    sys.stdout.write(f"lab {lab.cfg.name}: the largest shares of a deadline used, of {len(found)} waits\n")
    for margin in found[:top]:
        sys.stdout.write(f"  {margin}\n")
    sys.stdout.write(f"  {len(over)} of them above a third of their deadline\n" if over
                     else "  none above a third of its deadline\n")
    return 0


def _show(docs: list[dict[str, Any]], json: bool, every: bool = False) -> None:
    if json:
        print_json(docs if every else docs[0])
        return
    up = [doc for doc in docs if doc["up"]]
    if not up:
        sys.stdout.write("no lab is up\n" if every else f"lab {docs[0]['name']} is down\n")
    for doc in up:
        sys.stdout.write(f"lab {doc['name']}: namespace {doc['namespace']}, bridge {doc['bridge']}, "
                         f"daemon {doc['daemon']}, vbmcd {doc['vbmcd']}\nsocket {doc['socket']}\n"
                         f"inventory {doc['inventory']}\n"
                         + (f"dashboard {doc['dashboard']}\n" if doc.get("dashboard") else ""))
        table(["name", "mac", "rack", "domain", "bmc", "memory", "vcpus", "firmware"],
              [[n["name"], n["mac"], n["rack"], n["domain"], n["bmc"], f"{n['memory_mib']} MiB",
                n["vcpus"], "uefi" if n["uefi"] else "bios"] for n in doc["nodes"]])
