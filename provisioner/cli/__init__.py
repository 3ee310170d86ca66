"""The `provisioner` command: argument parsing and dispatch. Errors end as one line on
stderr with exit code 1 (failed) or 2 (usage)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from .. import __version__, config
from ..client import Client
from ..errors import ProvisionerError
from . import commands


def _add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the daemon (API, HTTP, TFTP, DHCP, workers)")
    p.add_argument("--data-dir", help="state directory (default /var/lib/provisioner)")
    p.add_argument("--listen", help="address for HTTP and TFTP (default 0.0.0.0)")
    p.add_argument("--http-port", type=int, help="HTTP port for API and boot files (default 8080)")
    p.add_argument("--tftp-port", type=int, help="TFTP port (default 69)")
    p.add_argument("--socket", help="unix socket for local operators (default /run/provisioner/api.sock)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any setting, e.g. --set dhcp.interface=br0 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provisioner",
        description="Bare-metal provisioning: enroll machines by MAC, power them over IPMI, "
                    "network-boot them into a maintenance image and inspect them.")
    parser.add_argument("--version", action="version", version=f"provisioner {__version__}")
    parser.add_argument("--config", help="TOML config file (default /etc/provisioner/provisioner.toml)")
    parser.add_argument("--api", help="daemon address: http://HOST:PORT or unix:///PATH "
                                      "(default: the local daemon's socket)")
    parser.add_argument("--token-file", help="operator token for the API over TCP")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_serve(sub)

    p = sub.add_parser("enroll", help="enroll machines by MAC and inspect them until ready")
    p.add_argument("mac", nargs="?", help="MAC of the machine's boot NIC")
    p.add_argument("--from", dest="from_file", metavar="INVENTORY", help="enroll every node of a YAML inventory")
    p.add_argument("--bmc", help="BMC address ADDR[:PORT] (port 623 by default)")
    p.add_argument("--bmc-user", help="BMC user name")
    p.add_argument("--bmc-password-file", help="file holding the BMC password")
    p.add_argument("--cipher-suite", type=int, choices=(3, 17), help="IPMI cipher suite (default 17)")
    p.add_argument("--rack", help="the rack (fault domain), e.g. rack-3")
    p.add_argument("--name", help="node name (default node-<last 6 MAC digits>)")
    p.add_argument("--no-wait", action="store_true", help="return at once instead of showing progress")
    p.add_argument("--no-inspect", action="store_true", help="only record the node")

    p = sub.add_parser("inspect", help="boot a node into the maintenance image and inspect it again")
    p.add_argument("node")
    p.add_argument("--no-wait", action="store_true")

    p = sub.add_parser("nodes", help="list nodes")
    p.add_argument("--rack")
    for name, text in (("show", "one node in detail"), ("events", "a node's history"),
                       ("delete", "remove a node that is not busy")):
        p = sub.add_parser(name, help=text)
        p.add_argument("node", help="node name, id or MAC")

    p = sub.add_parser("power", help="power on|off|cycle|status a node or a rack")
    p.add_argument("action", choices=("on", "off", "cycle", "status"))
    p.add_argument("target", help="node name, MAC, or rack")

    sub.add_parser("discovered", help="unknown MACs that asked for DHCP (dhcp.unknown_macs = discover)")

    p = sub.add_parser("lab", help="the virtual lab: namespace, libvirtd, PXE domains, virtual BMCs")
    lab = p.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    up = lab.add_parser("up", help="create the lab and start its daemon")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--racks", type=int, default=2)
    up.add_argument("--uefi", action="store_true", help="UEFI (OVMF) firmware instead of BIOS")
    up.add_argument("--memory", type=int, default=2048, help="MiB per node")
    up.add_argument("--vcpus", type=int, default=2)
    up.add_argument("--disk", type=int, default=20, help="GiB per node (sparse)")
    lab.add_parser("status", help="what the lab is running")
    lab.add_parser("down", help="remove everything the lab created")
    return parser


def _settings(args: argparse.Namespace) -> config.Settings:
    overrides: dict[str, object] = {}
    if args.command == "serve":
        for key, attr in (("server.data_dir", "data_dir"), ("server.listen", "listen"),
                          ("server.http_port", "http_port"), ("server.tftp_port", "tftp_port"),
                          ("server.socket", "socket")):
            overrides[key] = getattr(args, attr)
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise ProvisionerError(f"--set {item!r}: expected SECTION.KEY=VALUE")
            overrides[key.strip()] = value
    if args.api:
        overrides["client.api"] = args.api
    if args.token_file:
        overrides["client.token_file"] = args.token_file
    return config.load(Path(args.config) if args.config else None, overrides)


def _client(settings: config.Settings) -> Client:
    api = settings.client_api or f"unix://{settings.server_socket}"
    token = os.environ.get("PROVISIONER_TOKEN")
    if api.startswith("http") and not token and settings.operator_token_file.exists():
        token = settings.operator_token_file.read_text().strip()
    return Client(api, token)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = _settings(args)
        if args.command == "serve":
            from ..daemon import Daemon
            logging.getLogger().setLevel(logging.DEBUG if args.verbose else settings.server_log_level)
            Daemon(settings).run_forever()
            return 0
        if args.command == "lab":
            from ..lab import cli as lab_cli
            return lab_cli.run(args)
        handler = getattr(commands, f"cmd_{args.command}")
        return int(handler(_client(settings), args))
    except ProvisionerError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 1
