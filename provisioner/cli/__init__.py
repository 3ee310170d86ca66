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
from . import commands, completion, endpoints, fleet, guests


def _add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the daemon (API, HTTP, TFTP, DHCP, workers)")
    p.add_argument("--data-dir", help="state directory (default /var/lib/provisioner)")
    p.add_argument("--listen", help="address for HTTP and TFTP (default 0.0.0.0)")
    p.add_argument("--http-port", type=int, help="HTTP port for API and boot files (default 8080)")
    p.add_argument("--tftp-port", type=int, help="TFTP port (default 69)")
    p.add_argument("--socket", help="unix socket for local operators (default /run/provisioner/api.sock)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any setting, e.g. --set dhcp.interface=br0 (repeatable)")


def _add_nodes(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Enrolling, looking at, powering and labelling nodes."""
    p = sub.add_parser("enroll", help="enroll machines by MAC and inspect them until ready")
    p.add_argument("mac", nargs="?", help="MAC of the machine's boot NIC")
    p.add_argument("--from", dest="from_file", metavar="INVENTORY", help="enroll every node of a YAML inventory")
    p.add_argument("--bmc", help="BMC address: ADDR[:PORT] (IPMI port 623, Redfish 443 by default) or "
                                 "https://ADDR[:PORT] (Redfish)")
    p.add_argument("--bmc-driver", choices=("ipmi", "redfish"),
                   help="the BMC's protocol (default: detected, Redfish first, then IPMI)")
    p.add_argument("--bmc-system", help="Redfish: the system's path, /redfish/v1/Systems/<id> "
                                        "(default: the BMC's only system)")
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
    p.add_argument("--tag")
    p.add_argument("--state", help="only nodes in this state (ready, active, deploy-failed...)")
    for name, text in (("show", "one node in detail"), ("events", "a node's history"),
                       ("delete", "remove a node that is not busy")):
        p = sub.add_parser(name, help=text)
        p.add_argument("node", help="node name, id or MAC")

    p = sub.add_parser("console", help="the end of a node's or a guest's serial console log")
    p.add_argument("node", metavar="NAME", help="node name, id or MAC, or a guest's name")
    p.add_argument("--bytes", type=int, default=65536, help="how much of its end (default 64 KiB)")

    p = sub.add_parser("power", help="power on|off|cycle|status a node, a rack, a tag or all")
    p.add_argument("action", choices=("on", "off", "cycle", "status"))
    p.add_argument("target", help="node name or MAC, a rack, a tag (tag:NAME to say so) or all")

    p = sub.add_parser("label", help="tag a node (tags are targets, like racks) or set its upgrade domain")
    p.add_argument("node", help="node name, id or MAC")
    p.add_argument("--tag", action="append", default=[], metavar="TAG", help="add a tag (repeatable)")
    p.add_argument("--untag", action="append", default=[], metavar="TAG", help="remove a tag (repeatable)")
    p.add_argument("--upgrade-domain", metavar="N|auto",
                   help="reimage this node in upgrade domain N (auto: by its place in its rack)")

    sub.add_parser("discovered", help="unknown MACs that asked for DHCP (dhcp.unknown_macs = discover)")


def _add_images_and_jobs(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The image catalog, and reimage and rollback jobs."""
    p = sub.add_parser("image", help="the image catalog: import, list, show, remove")
    img = p.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    imp = img.add_parser("import", help="import a qcow2, raw, VHD or VHDX file or URL (inspected first)")
    imp.add_argument("source", metavar="FILE_OR_URL")
    imp.add_argument("--name", required=True, help="catalog name, e.g. host")
    imp.add_argument("--version", help="version label (default: the next number)")
    imp.add_argument("--format", choices=("qcow2", "raw", "vhd", "vhdx"),
                     help="the format the file must be (default: from its extension)")
    img.add_parser("list", help="every image and version")
    for name, text in (("show", "one image"), ("remove", "remove an image no node uses")):
        one = img.add_parser(name, help=text)
        one.add_argument("ref", metavar="NAME[:VERSION]")

    p = sub.add_parser("reimage", help="lay a host image down on nodes, upgrade domain by upgrade domain")
    p.add_argument("target", nargs="?", help="a node, a rack (rack-3), a tag or all")
    p.add_argument("--image", metavar="NAME[:VERSION]", help="default: the image the nodes run now")
    p.add_argument("--max-parallel", metavar="N", help="nodes worked on at once (default 8)")
    p.add_argument("--max-unavailable", metavar="N|P%", help="nodes down at once, per batch (default 50%%)")
    p.add_argument("--max-failures", metavar="N|P%",
                   help="failures a batch may have before the next batches are stopped (default 0)")
    p.add_argument("--no-multicast", action="store_true",
                   help="send the image to each node over HTTP, even where a batch could share one "
                        "multicast session")
    p.add_argument("--dry-run", action="store_true", help="show the plan only (with the guests it moves)")
    p.add_argument("--force", action="store_true",
                   help="go on even where a role would lose more than one upgrade domain's worth of guests")
    p.add_argument("--no-wait", action="store_true", help="start the job and return")
    p.add_argument("--abort", action="store_true", help="stop the running job before its next node")

    p = sub.add_parser("rollback", help="discard hosts' differencing layers: back to the pristine base")
    p.add_argument("target", help="a node, a rack, a tag or all")
    p.add_argument("--to-previous", action="store_true", help="back to the image before the last reimage")
    p.add_argument("--max-parallel", metavar="N")
    p.add_argument("--max-unavailable", metavar="N|P%")
    p.add_argument("--dry-run", action="store_true", help="show the plan only (with the guests it moves)")
    p.add_argument("--force", action="store_true",
                   help="go on even where a role would lose more than one upgrade domain's worth of guests")
    p.add_argument("--no-wait", action="store_true")


def _add_guests(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Guests per role and the hosts they run on."""
    p = sub.add_parser("deploy", help="make the guests a roles file describes: place, create, scale, roll")
    p.add_argument("roles", metavar="ROLES.yaml", help="the roles file (see docs/roles.md)")
    p.add_argument("--dry-run", action="store_true", help="show the plan only")
    p.add_argument("--no-wait", action="store_true", help="start the deploy job and return")

    p = sub.add_parser("guests", help="list guests")
    p.add_argument("--host")
    p.add_argument("--role")
    p = sub.add_parser("guest", help="one guest: show, reset (pristine base), delete, console")
    gst = p.add_subparsers(dest="guest_command", metavar="ACTION", required=True)
    for name, text in (("show", "one guest in detail"), ("delete", "remove a guest from its host"),
                       ("reset", "discard its overlay: back to its pristine base, same identity and config"),
                       ("console", "the tail of its serial console log")):
        one = gst.add_parser(name, help=text)
        one.add_argument("name", metavar="GUEST")
        if name == "reset":
            one.add_argument("--no-wait", action="store_true", help="do not wait until it is ready")
            one.add_argument("--timeout", type=float, default=900, help="seconds to wait (default 900)")
        if name == "console":
            one.add_argument("--bytes", type=int, default=65536, help="how much of its end (default 64 KiB)")

    p = sub.add_parser("host", help="hypervisor hosts: list, add (a host not deployed here), remove, gc, ssh-key")
    hst = p.add_subparsers(dest="host_command", metavar="ACTION", required=True)
    hst.add_parser("list", help="active nodes and registered hosts, with their guests")
    add = hst.add_parser("add", help="register a libvirt host the provisioner did not deploy")
    add.add_argument("name")
    add.add_argument("address", help="its IP address or DNS name")
    add.add_argument("--rack", required=True, help="its rack (fault domain)")
    add.add_argument("--host-key", required=True, metavar="FILE|LINE",
                     help="its SSH host public key: a .pub file or the line itself (checked on every connection)")
    add.add_argument("--port", type=int, default=22, help="its SSH port (default 22)")
    add.add_argument("--bridge", default="", help="the bridge guests' NICs join on it (for the guest network)")
    for name, text in (("remove", "forget a registered host that runs no guests"),
                       ("gc", "remove base images no guest on the host uses")):
        one = hst.add_parser(name, help=text)
        one.add_argument("name", metavar="HOST")
    hst.add_parser("ssh-key", help="the provisioner's SSH public key, for a registered host's authorized_keys")

    sub.add_parser("endpoints", help="role endpoints: VIP, port, DNS name, members and their health")
    p = sub.add_parser("swap", help="exchange two roles' endpoints at once (staging <-> production)")
    p.add_argument("role_a", metavar="ROLE_A")
    p.add_argument("role_b", metavar="ROLE_B")
    p.add_argument("--dry-run", action="store_true", help="show what would change")


def _add_nightly_and_jobs(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The nightly run, and every job."""
    p = sub.add_parser("nightly", help="reimage a pool, check every host that came back, write JUnit XML "
                       "and an HTML report; exit 1 if any machine failed")
    p.add_argument("pool", help="a rack, a tag (tag:NAME) or all")
    p.add_argument("--image", help="image to lay down (default: each machine's current image)")
    p.add_argument("--checks", metavar="PLAYBOOK", help="run this Ansible playbook's tasks as the checks "
                   "(e.g. playbooks/checks.yml; default: the built-in checks over SSH)")
    p.add_argument("--report", default="nightly-report", metavar="DIR",
                   help="where junit.xml and report.html go (default ./nightly-report)")
    p.add_argument("--max-unavailable", metavar="N|P%", help="machines down at once (default 50%%)")

    p = sub.add_parser("completion", help="print the bash completion script: eval \"$(provisioner completion bash)\"")
    p.add_argument("shell", choices=("bash",))
    p = sub.add_parser("complete", help="names of a kind for shell completion, from the daemon (the script uses it)")
    p.add_argument("kind", choices=completion.KINDS)
    p.add_argument("prefix", nargs="?", default="")

    p = sub.add_parser("job", help="reimage, rollback and deploy jobs: all, or one in detail")
    p.add_argument("job", nargs="?", type=int)
    sub.add_parser("controllers", help="the controllers sharing the fleet: racks, jobs, leases")


def _add_lab(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The virtual lab."""
    p = sub.add_parser("lab", help="the virtual lab: namespace, libvirtd, PXE domains, virtual BMCs")
    lab = p.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    up = lab.add_parser("up", help="create the lab and start its daemon")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--racks", type=int, default=2)
    up.add_argument("--firmware", choices=("bios", "uefi", "mixed"), default="bios",
                    help="SeaBIOS, UEFI (OVMF), or mixed: odd racks BIOS, even racks UEFI")
    up.add_argument("--uefi", action="store_true", help="the same as --firmware uefi")
    up.add_argument("--secure-boot", choices=("off", "on", "mixed"), default="off",
                    help="UEFI nodes enforce Secure Boot with Microsoft's keys enrolled, as servers ship "
                         "(mixed: the even-numbered UEFI nodes of each rack); they need Redfish BMCs")
    up.add_argument("--bmc", choices=("ipmi", "redfish", "mixed"), default="ipmi",
                    help="virtualbmc (IPMI), sushy-tools' emulator (Redfish), or mixed: odd racks "
                         "IPMI, even racks Redfish")
    up.add_argument("--memory", type=int, default=2048, help="MiB per node")
    up.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite",
                    help="the daemon's database: SQLite, or a PostgreSQL of the lab's own (several controllers' engine)")
    up.add_argument("--vcpus", type=int, default=2)
    up.add_argument("--disk", type=int, default=20, help="GiB per node (sparse)")
    up.add_argument("--vagrant", action="store_true",
                    help="no nodes: the Vagrantfile makes them on the lab's network ('vagrant up')")
    adopt = lab.add_parser("adopt", help="take in a node Vagrant made: virtual BMC, inventory (the "
                           "Vagrantfile's trigger runs it)")
    adopt.add_argument("domain", metavar="DOMAIN")
    adopt.add_argument("--rack", required=True)
    status = lab.add_parser("status", help="what each lab is running (one with --name)")
    down = lab.add_parser("down", help="remove everything the lab created (every lab with --all)")
    down.add_argument("--all", action="store_true", help="every lab on this machine")
    margins = lab.add_parser("margins", help="how much of its deadline each step and guest of the lab took, "
                             "largest first (a deadline should be three times what it measures)")
    margins.add_argument("--top", type=int, default=5, help="how many to show (default 5)")
    host = lab.add_parser("host", help="register this machine (the lab's libvirtd, over SSH) as a host guests "
                          "can be placed on, in rack-0")
    host.add_argument("host_name", nargs="?", default="lab-host", metavar="HOST", help="its name (default lab-host)")
    for action in (up, adopt, status, down, margins, host):
        action.add_argument("--name", default=None,
                            help="which lab: several run side by side, each with its own namespace, "
                                 "subnet, libvirtd and daemon (default 'lab')")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provisioner",
        description="Bare-metal provisioning: enroll machines by MAC, power them over IPMI, "
                    "network-boot them into a maintenance image and inspect them, lay host images down "
                    "with a differencing layer, roll them back, reimage racks by upgrade domain; "
                    "place guests per role on the hosts, on shared read-only bases.")
    parser.add_argument("--version", action="version", version=f"provisioner {__version__}")
    parser.add_argument("--config", help="TOML config file (default /etc/provisioner/provisioner.toml)")
    parser.add_argument("--api", help="daemon address: http://HOST:PORT or unix:///PATH "
                                      "(default: the local daemon's socket)")
    parser.add_argument("--token-file", help="operator token for the API over TCP")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_serve, _add_nodes, _add_images_and_jobs, _add_guests, _add_nightly_and_jobs, _add_lab):
        add(sub)
    _json_after_the_command(parser)
    return parser


def _json_after_the_command(parser: argparse.ArgumentParser) -> None:
    """`--json` is taken after the command too (`provisioner nodes --json`), at any depth
    (`provisioner image list --json`). Given there, it is set; not given, the value from
    before the command stands (SUPPRESS leaves the attribute alone)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                child.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                                   help="machine-readable output")
                _json_after_the_command(child)


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
        if args.command == "completion":
            return completion.cmd_completion(parser, args)
        if args.command == "complete":
            return completion.cmd_complete(_client(settings), args)
        if args.command == "nightly":
            from ..nightly.run import cmd_nightly
            return cmd_nightly(_client(settings), args)
        handler = getattr(commands, f"cmd_{args.command}", None) or getattr(fleet, f"cmd_{args.command}", None) \
            or getattr(guests, f"cmd_{args.command}", None) or getattr(endpoints, f"cmd_{args.command}")
        return int(handler(_client(settings), args))
    except ProvisionerError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 1
