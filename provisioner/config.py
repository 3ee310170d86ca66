"""Settings: one frozen object built once at the entry point from embedded defaults,
an optional TOML file, PROVISIONER_* environment variables and command-line flags
(later sources win)."""

from __future__ import annotations

import ipaddress
import socket
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .network import addresses
from .network.addresses import GuestNetwork

DEFAULT_CONFIG_FILE = Path("/etc/provisioner/provisioner.toml")
ENV_PREFIX = "PROVISIONER_"
# Short environment names operators expect, for settings whose full names are long.
ENV_ALIASES = {"PROVISIONER_API": "client_api", "PROVISIONER_TOKEN_FILE": "client_token_file"}


def _default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/provisioner")
    return Path.home() / ".local/share/provisioner"


def _default_socket() -> Path:
    if os.geteuid() == 0:
        return Path("/run/provisioner/api.sock")
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/provisioner-{os.getuid()}"
    return Path(runtime) / "provisioner/api.sock"


@dataclass(frozen=True)
class Settings:
    """Every tunable of the daemon and the CLI. TOML keys are `section.name`, e.g.
    `[dhcp] range = ...` sets `dhcp_range`; the environment uses
    PROVISIONER_DHCP_RANGE."""

    # [server]
    server_data_dir: Path = field(default_factory=_default_data_dir)
    server_listen: str = "0.0.0.0"
    server_http_port: int = 8080
    server_tftp_port: int = 69
    server_socket: Path = field(default_factory=_default_socket)
    # The key that seals BMC passwords in the database: controllers sharing one database
    # must share it (copy it, as MAAS's rack controllers share their secret). Default:
    # <data_dir>/secret.key, made on first start.
    server_secret_file: Path | None = None
    server_workers: int = 8
    server_log_level: str = "INFO"
    # [http] what one client may hold of the HTTP server. A connection costs a thread only
    # once its request has arrived whole; until then it waits in one event loop.
    http_max_connections: int = 4096  # open at once, idle ones included; beyond: 503, closed
    http_max_busy: int = 64  # requests being answered at once; beyond: 503 (agents retry)
    http_request_timeout: float = 20.0  # a request's headers (and small body), from its first byte
    http_idle_timeout: float = 30.0  # a connection with no request under way
    http_io_timeout: float = 60.0  # longest wait for one read or write of a large body
    # [tftp]
    tftp_max_transfers: int = 64  # at once, over all clients
    tftp_max_per_client: int = 4  # at once, from one address
    # [boot]
    boot_artifacts_dir: Path | None = None  # default: <data_dir>/boot
    boot_ipxe_dir: Path = Path("/usr/lib/ipxe")
    boot_kernel_args: str = "console=ttyS0,115200 quiet"
    # [dhcp]
    dhcp_enabled: bool = True
    dhcp_mode: str = "server"  # server | proxy
    dhcp_interface: str = ""  # empty: every interface whose subnet matches the range
    dhcp_range: str = "10.99.0.100,10.99.0.199"
    dhcp_netmask: str = "255.255.255.0"
    dhcp_lease_time: str = "1h"
    dhcp_proxy_subnet: str = "10.99.0.0"  # proxy mode: the network to serve PXE on
    dhcp_unknown_macs: str = "ignore"  # ignore | discover
    dhcp_dnsmasq: str = "dnsmasq"
    # IPv6 router advertisements on dhcp.interface (needs an IPv6 address there). iPXE
    # waits for one after DHCP; on a network without an IPv6 router each PXE boot
    # stalls ~13 s on that timeout (measured in the lab).
    dhcp_router_advertisements: bool = False
    # [multicast] one image sent once to the nodes of a reimage batch (udpcast); what a
    # node misses it fetches over HTTP with range requests
    multicast_enabled: bool = True
    multicast_interface: str = ""  # send on this interface ("": dhcp.interface, else the one on dhcp.range)
    multicast_networks: str = ""  # node addresses (CIDRs, comma-separated) multicast reaches ("": the interface's)
    multicast_group: str = "239.255.60.0/24"  # each session takes two addresses (rendezvous, data)
    multicast_ports: str = "9000-9099"  # each session takes two ports
    multicast_ttl: int = 1  # 1: the provisioning network's own link, no router crossed
    multicast_min_receivers: int = 2  # fewer nodes needing the image in a batch: HTTP
    multicast_max_wait: float = 30.0  # the join window, from the first receiver; then it starts
    multicast_max_bitrate: str = "600m"  # the sender's ceiling, retransmissions included (udpcast's notation)
    multicast_receive_timeout: float = 10.0  # a receiver's silence from the sender before it goes HTTP
    multicast_sender: str = "udp-sender"
    # [power]
    power_driver: str = "bmc"  # bmc (each node's own: IPMI or Redfish) | fake ("ipmi" is read as "bmc")
    power_min_interval: float = 1.0  # seconds between two commands to one BMC
    power_timeout: float = 15.0  # one BMC command (IPMI or Redfish)
    power_retries: int = 3
    power_backoff: float = 1.0  # first retry delay; doubles each time
    power_verify_timeout: float = 30.0  # wait for the power state to really change
    power_cipher_suite: int = 17  # default for nodes that do not say
    power_redfish_ca_bundle: str = ""  # CA file for Redfish BMCs' certificates ("": the system's CAs)
    power_redfish_insecure: bool = False  # no TLS verification for Redfish BMCs: labs only
    # [timeouts] seconds each in-progress step may take before the node fails
    timeouts_power_on: float = 180.0
    timeouts_agent_boot: float = 900.0
    timeouts_inspection: float = 300.0
    timeouts_deadline_check: float = 2.0
    timeouts_deploy_stall: float = 300.0  # writing an image: longest silence from the agent
    timeouts_host_boot: float = 600.0  # from the switch to the disk to the host agent's first call
    # [reimage]
    reimage_upgrade_domains: int = 2  # nodes of a rack are spread over this many, by name order
    # [guests]
    guests_reserved_cores: int = 1  # the lowest cores of each host stay with the host
    guests_reserved_memory_mib: int = 512  # and this much memory
    guests_domain_type: str = "auto"  # kvm, qemu (TCG), or auto: kvm where the host's libvirt offers it
    guests_pool_path: str = "/var/lib/libvirt/provisioner"  # on each host: bases and overlays
    guests_console_dir: str = "/var/log/provisioner/guests"  # on each host: serial console logs
    guests_ready_timeout: float = 600.0  # from start to the guest agent's first answer
    guests_max_parallel_hosts: int = 8  # hosts worked on at once by a deploy
    # [network] the guests' own network: stable addresses for guests, VIPs for role
    # endpoints. Left empty, guests get a user-mode NIC only (no address anyone can reach).
    network_subnet: str = ""  # e.g. 10.99.0.0/24: the provisioning network's, or one routed to it
    network_gateway: str = ""
    network_guest_range: str = ""  # e.g. 10.99.0.20-10.99.0.59: outside dhcp.range
    network_endpoint_range: str = ""  # e.g. 10.99.0.60-10.99.0.69: one VIP per role with endpoints
    network_interface: str = ""  # where the VIPs are added ("": dhcp.interface)
    # [dns] names for nodes, hosts, guests and role endpoints, answered by our dnsmasq
    dns_domain: str = ""  # e.g. lab.internal; "": no DNS
    dns_port: int = 53
    # [endpoints] the load balancer in front of each role's guests (Debian's HAProxy)
    endpoints_haproxy: str = "haproxy"
    endpoints_drain_timeout: float = 30.0  # open connections of a draining guest may finish this long
    endpoints_admit_timeout: float = 120.0  # a started guest's health check must pass within this
    # [healing] hosts declared dead (two signals agree), fenced through their BMC, their
    # guests placed again on healthy hosts; and what a host's reimage does with its guests
    healing_enabled: bool = True
    healing_check_interval: float = 5.0  # how often silent hosts are looked at (their BMC asked)
    healing_retry_interval: float = 30.0  # a host that could not be fenced, or guests with no room: tried again
    healing_on_reimage: str = "move"  # move: guests go to other hosts first (stopped where none has room); stop
    # [consoles] where each node's serial console is logged, {node} standing for its name:
    # the lab's domains write there; in a hardware lab, a console server (conserver, or
    # 'ipmitool sol activate' per node) does.
    consoles_node_log: str = "/var/log/provisioner/consoles/{node}.log"
    # [checks] acceptance checks by playbook: Debian's ansible-core
    checks_ansible_playbook: str = "ansible-playbook"
    # [database] empty: SQLite in the data directory (one controller). A PostgreSQL URL
    # (postgresql:///provisioner?host=/run/postgresql) lets several controllers share one fleet.
    database_url: str = ""
    # [controller] this daemon among the fleet's controllers (one database, several daemons):
    # its name (default: this machine's), the racks it serves first ("" = any rack: the
    # only controller, or a spare that takes racks whose controller died), and how long a
    # claim on a rack or a job holds without being renewed.
    controller_name: str = ""
    controller_racks: str = ""
    controller_lease: float = 15.0
    controller_address: str = ""  # the URL other controllers reach this one's API at; default: from server.listen
    # [agent]
    agent_heartbeat_interval: float = 10.0
    agent_lost_after: float = 60.0
    agent_host_heartbeat_interval: float = 10.0
    agent_host_lost_after: float = 45.0  # a host agent silent this long is marked lost
    # Host heartbeats the daemon plans to answer per second: a fleet larger than
    # interval x this gets a longer interval (and a longer time to be lost), in proportion.
    agent_host_heartbeats_per_second: float = 50.0
    # [client] (the CLI)
    client_api: str = ""  # http://host:8080 or unix:///path; default: the server socket
    client_token_file: Path | None = None

    @property
    def guest_network(self) -> GuestNetwork | None:
        provisioning = self.dhcp_range if self.dhcp_enabled and self.dhcp_mode == "server" else None
        return addresses.parse(self.network_subnet, self.network_gateway, self.network_guest_range,
                               self.network_endpoint_range, provisioning)

    @property
    def data_dir(self) -> Path:
        return self.server_data_dir

    @property
    def artifacts_dir(self) -> Path:
        return self.boot_artifacts_dir or self.server_data_dir / "boot"

    @property
    def secret_file(self) -> Path:
        return self.server_secret_file or self.server_data_dir / "secret.key"

    @property
    def db_path(self) -> Path:
        return self.server_data_dir / "provisioner.db"

    @property
    def controller(self) -> str:
        return self.controller_name or socket.gethostname()

    @property
    def serving_racks(self) -> tuple[str, ...] | None:
        """The racks this controller wants; None: any."""
        racks = tuple(r.strip() for r in self.controller_racks.split(",") if r.strip())
        return racks or None

    @property
    def database(self) -> str:
        """Where the store lives: the PostgreSQL URL, or the SQLite file."""
        return self.database_url or str(self.db_path)

    @property
    def log_dir(self) -> Path:
        return self.server_data_dir / "logs"

    @property
    def operator_token_file(self) -> Path:
        return self.client_token_file or self.server_data_dir / "operator.token"


_FIELDS = {f.name: f for f in fields(Settings)}


def _coerce(name: str, raw: Any, defaults: Settings) -> Any:
    default: Any = getattr(defaults, name)
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if isinstance(raw, list) and isinstance(default, str):
            return ",".join(str(item) for item in raw)  # a TOML list: racks = ["rack-1", "rack-2"]
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path) or name in ("boot_artifacts_dir", "client_token_file", "server_secret_file"):
            return Path(str(raw)).expanduser()
        return str(raw)
    except ValueError as exc:
        raise ConfigError(f"setting {name.replace('_', '.', 1)}: {exc}") from exc


def _key_to_field(key: str) -> str:
    name = key.replace(".", "_").replace("-", "_").lower()
    if name not in _FIELDS:
        raise ConfigError(f"unknown setting {key!r}")
    return name


def _flatten(doc: Mapping[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section, body in doc.items():
        if not isinstance(body, Mapping):
            raise ConfigError(f"{source}: top-level key {section!r} must be a [section]")
        for key, value in body.items():
            out[_key_to_field(f"{section}.{key}")] = value
    return out


def load(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings: defaults < TOML file < environment < overrides (flags)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or (Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG") else None)
    if path is None and DEFAULT_CONFIG_FILE.exists():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        try:
            doc = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        values.update(_flatten(doc, str(path)))
    for key, raw in env.items():
        if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG":
            name = key[len(ENV_PREFIX):].lower()
            if key in ENV_ALIASES:
                values[ENV_ALIASES[key]] = raw
            elif name in _FIELDS:
                values[name] = raw
    for key, raw in (overrides or {}).items():
        if raw is not None:
            values[_key_to_field(key)] = raw
    defaults = Settings()
    settings = Settings(**{name: _coerce(name, raw, defaults) for name, raw in values.items()})
    validate(settings)
    return settings


def parse_ports(text: str) -> range:
    """'9000-9099' -> even port bases 9000, 9002, ..., 9098 (each session takes two ports)."""
    try:
        low, _, high = text.partition("-")
        first, last = int(low), int(high or low)
    except ValueError as exc:
        raise ConfigError(f"multicast.ports must be a range like 9000-9099, not {text!r}") from exc
    first += first % 2
    if not 1024 <= first < last <= 65535:
        raise ConfigError(f"multicast.ports {text!r}: need at least two ports between 1024 and 65535")
    return range(first, last, 2)


def parse_group(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text, strict=False)
    except ValueError as exc:
        raise ConfigError(f"multicast.group must be a multicast network like 239.255.60.0/24: {exc}") from exc
    if not net.is_multicast or net.num_addresses < 4:
        raise ConfigError(f"multicast.group {text!r} is not a multicast network of at least 4 addresses")
    return net


def validate(settings: Settings) -> None:
    if settings.dhcp_mode not in ("server", "proxy"):
        raise ConfigError(f"dhcp.mode must be 'server' or 'proxy', not {settings.dhcp_mode!r}")
    if settings.dhcp_unknown_macs not in ("ignore", "discover"):
        raise ConfigError(
            f"dhcp.unknown_macs must be 'ignore' or 'discover', not {settings.dhcp_unknown_macs!r}"
        )
    if settings.power_driver not in ("bmc", "ipmi", "fake"):
        raise ConfigError(f"power.driver must be 'bmc' or 'fake', not {settings.power_driver!r}")
    if settings.power_redfish_ca_bundle and not Path(settings.power_redfish_ca_bundle).is_file():
        raise ConfigError(f"power.redfish_ca_bundle: no file {settings.power_redfish_ca_bundle}")
    if settings.dhcp_router_advertisements and not settings.dhcp_interface:
        raise ConfigError("dhcp.router_advertisements needs dhcp.interface")
    if settings.database_url and not settings.database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("database.url must be a PostgreSQL URL (postgresql://...), or empty for SQLite")
    if settings.controller_lease < 3 * settings.timeouts_deadline_check:
        raise ConfigError("controller.lease must be at least 3 x timeouts.deadline_check (leases are renewed "
                          "on that tick)")
    if settings.agent_host_heartbeats_per_second <= 0:
        raise ConfigError("agent.host_heartbeats_per_second must be above 0")
    if settings.power_cipher_suite not in (3, 17):
        raise ConfigError("power.cipher_suite must be 3 or 17")
    if "{node}" not in settings.consoles_node_log:
        raise ConfigError("consoles.node_log must contain {node} (each node has its own log)")
    for name in ("http_max_connections", "http_max_busy", "tftp_max_transfers", "tftp_max_per_client"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{name.replace('_', '.', 1)} must be at least 1")
    for name in ("http_request_timeout", "http_idle_timeout", "http_io_timeout"):
        if not getattr(settings, name) > 0:
            raise ConfigError(f"{name.replace('_', '.', 1)} must be more than 0 seconds")
    if not 1 <= settings.multicast_ttl <= 255:
        raise ConfigError("multicast.ttl must be between 1 and 255")
    if settings.multicast_min_receivers < 2:
        raise ConfigError("multicast.min_receivers must be at least 2 (one receiver is what HTTP is for)")
    for name in ("multicast_max_wait", "multicast_receive_timeout"):
        if not getattr(settings, name) > 0:
            raise ConfigError(f"{name.replace('_', '.', 1)} must be more than 0 seconds")
    rate = re.fullmatch(r"([1-9][0-9]*)([km]?)", settings.multicast_max_bitrate.lower())
    # udpcast reads the rate into a 32-bit int: 2147m and more wrap around (measured: its
    # receivers fail at once), and it knows no 'g'.
    if not rate or int(rate.group(1)) * {"": 1, "k": 1000, "m": 1000_000}[rate.group(2)] > 2**31 - 1:
        raise ConfigError(f"multicast.max_bitrate must be a rate like 600m or 50000k (bits per second, "
                          f"at most 2147m), not {settings.multicast_max_bitrate!r}")
    parse_group(settings.multicast_group)
    parse_ports(settings.multicast_ports)
    for net in filter(None, (n.strip() for n in settings.multicast_networks.split(","))):
        try:
            ipaddress.IPv4Network(net, strict=False)
        except ValueError as exc:
            raise ConfigError(f"multicast.networks: {exc}") from exc
    network = settings.guest_network
    if settings.dns_domain and not settings.dhcp_enabled:
        raise ConfigError("dns.domain needs dhcp.enabled: the provisioner's dnsmasq answers for the domain")
    if settings.dns_domain and not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}"
                                                r"[a-z0-9])?)*", settings.dns_domain):
        raise ConfigError(f"dns.domain must be a DNS domain like lab.internal, not {settings.dns_domain!r}")
    if network is not None and network.endpoints is not None and not (settings.network_interface or
                                                                       settings.dhcp_interface):
        raise ConfigError("role endpoints need network.interface (or dhcp.interface): the VIPs are added there")
    for name in ("endpoints_drain_timeout", "endpoints_admit_timeout"):
        if not getattr(settings, name) > 0:
            raise ConfigError(f"{name.replace('_', '.', 1)} must be more than 0 seconds")
    if settings.healing_on_reimage not in ("move", "stop"):
        raise ConfigError(f"healing.on_reimage must be 'move' or 'stop', not {settings.healing_on_reimage!r}")
    for name in ("healing_check_interval", "healing_retry_interval"):
        if not getattr(settings, name) > 0:
            raise ConfigError(f"{name.replace('_', '.', 1)} must be more than 0 seconds")
    for port in (settings.server_http_port, settings.server_tftp_port, settings.dns_port):
        if not 0 <= port <= 65535:
            raise ConfigError(f"port {port} is out of range")
