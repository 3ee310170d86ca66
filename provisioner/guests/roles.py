"""The roles file: what guests the operator wants, per role. Read and checked whole
before anything is planned, every problem named with its role and key.

    roles:
      - name: web
        base: guest:1            # catalog NAME[:VERSION]: the shared read-only base
        app: web-app             # optional: attached read-only as a second disk
        vcpus: 1                 # dedicated host cores, pinned, never shared
        memory_mib: 256
        count: 3
        spread: rack             # rack (default): across racks first; host; none
        upgrade_domains: 2       # guests roll to a new base one domain at a time
        user_data: web.yaml.j2   # jinja2 template for cloud-init user data, next to this file
        vars: {port: 8080}       # per-role variables for the template
        endpoints:               # a VIP per role, kept in a load balancer (HAProxy)
          - port: 80             # on the VIP
            protocol: http       # http (default) | tcp
            guest_port: 80       # on each guest (default: port)
            check: /health       # http: a GET that must answer 2xx; tcp: a connect
            interval: 2          # seconds between checks; 2 failures take a guest out
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable

import yaml

from ..errors import InvalidInput
from ..models import validate_name

SPREADS = ("rack", "host", "none")
_KEYS = {"name", "base", "app", "vcpus", "memory_mib", "count", "spread", "upgrade_domains", "user_data", "vars",
         "endpoints"}
_ENDPOINT_KEYS = {"port", "protocol", "guest_port", "check", "interval"}
MAX_COUNT = 1000


class Protocol(StrEnum):
    HTTP = "http"
    TCP = "tcp"


@dataclass(frozen=True)
class Endpoint:
    """One port of a role's VIP, and how its guests' health is checked."""
    port: int
    protocol: Protocol = Protocol.HTTP
    guest_port: int = 0  # 0: the same as port
    check: str = "/"
    interval: float = 2.0

    @property
    def target(self) -> int:
        return self.guest_port or self.port

    def doc(self) -> dict[str, Any]:
        return {"port": self.port, "protocol": str(self.protocol), "guest_port": self.target, "check": self.check,
                "interval": self.interval}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Endpoint":
        return cls(int(doc["port"]), Protocol(doc["protocol"]), int(doc["guest_port"]), str(doc["check"]),
                   float(doc["interval"]))


@dataclass(frozen=True)
class Role:
    name: str
    base: str
    vcpus: int
    memory_mib: int
    count: int
    app: str | None = None
    spread: str = "rack"
    upgrade_domains: int = 1
    user_data: str | None = None  # the template's text
    vars: dict[str, Any] = field(default_factory=dict)
    endpoints: tuple[Endpoint, ...] = ()


def _int(doc: dict[str, Any], key: str, where: str, low: int, high: int, default: int | None = None) -> int:
    value = doc.get(key, default)
    if value is None:
        raise InvalidInput(f"{where}: '{key}' is required")
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidInput(f"{where}: '{key}' must be a whole number from {low} to {high}, not {value!r}")
    return value


def _ref(doc: dict[str, Any], key: str, where: str, required: bool) -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where}: '{key}' must be a catalog image, NAME or NAME:VERSION")
    return value.strip()


TemplateReader = Callable[[str], str]


def folder_reader(folder: Path) -> TemplateReader:
    """Templates named relative to the roles file's folder."""
    def read(name: str) -> str:
        path = folder / name
        try:
            return path.read_text()
        except OSError as exc:
            raise InvalidInput(f"cannot read the user_data template {path}: {exc.strerror}") from exc
    return read


def _endpoint(doc: Any, where: str) -> Endpoint:
    if not isinstance(doc, dict) or "port" not in doc:
        raise InvalidInput(f"{where}: each endpoint is a mapping with at least 'port'")
    unknown = sorted(set(doc) - _ENDPOINT_KEYS)
    if unknown:
        raise InvalidInput(f"{where}: unknown endpoint key {unknown[0]!r} (known: {', '.join(sorted(_ENDPOINT_KEYS))})")
    port = _int(doc, "port", where, 1, 65535)
    try:
        protocol = Protocol(doc.get("protocol", "http"))
    except ValueError as exc:
        raise InvalidInput(f"{where}: 'protocol' must be http or tcp, not {doc.get('protocol')!r}") from exc
    check = doc.get("check", "/")
    # Only a URL path's own characters: it goes into HAProxy's config (where '#' starts a
    # comment and a quote or a backslash would be read as syntax).
    if not isinstance(check, str) or not re.fullmatch(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,200}", check) \
            or "'" in check:
        raise InvalidInput(f"{where}: 'check' must be a URL path like /health, not {check!r}")
    interval = doc.get("interval", 2)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0.2 <= interval <= 300:
        raise InvalidInput(f"{where}: 'interval' must be seconds from 0.2 to 300, not {interval!r}")
    return Endpoint(port, protocol, _int(doc, "guest_port", where, 1, 65535, default=port), check, float(interval))


def _endpoints(doc: dict[str, Any], where: str) -> tuple[Endpoint, ...]:
    raw = doc.get("endpoints") or []
    if not isinstance(raw, list):
        raise InvalidInput(f"{where}: 'endpoints' must be a list")
    out: list[Endpoint] = []
    for i, item in enumerate(raw):
        endpoint = _endpoint(item, f"{where}, endpoints[{i}]")
        if any(e.port == endpoint.port for e in out):
            raise InvalidInput(f"{where}: endpoint port {endpoint.port} is declared twice (one VIP per role: "
                               "each port once)")
        out.append(endpoint)
    return tuple(out)


def parse_role(doc: Any, index: int, read: TemplateReader) -> Role:
    if not isinstance(doc, dict):
        raise InvalidInput(f"roles[{index}]: each role is a mapping with at least name, base, vcpus, memory_mib, count")
    name = doc.get("name")
    if not isinstance(name, str):
        raise InvalidInput(f"roles[{index}]: 'name' is required")
    validate_name(name, f"role name (roles[{index}])")
    where = f"role {name}"
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise InvalidInput(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    spread = doc.get("spread", "rack")
    if spread not in SPREADS:
        raise InvalidInput(f"{where}: 'spread' must be one of {', '.join(SPREADS)}, not {spread!r}")
    variables = doc.get("vars") or {}
    if not isinstance(variables, dict):
        raise InvalidInput(f"{where}: 'vars' must be a mapping")
    template = None
    if doc.get("user_data") is not None:
        raw = doc["user_data"]
        if not isinstance(raw, str):
            raise InvalidInput(f"{where}: 'user_data' must name a template file")
        try:
            template = read(raw)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from exc
    return Role(name=name, base=str(_ref(doc, "base", where, True)), app=_ref(doc, "app", where, False),
                vcpus=_int(doc, "vcpus", where, 1, 256), memory_mib=_int(doc, "memory_mib", where, 32, 1 << 22),
                count=_int(doc, "count", where, 0, MAX_COUNT), spread=spread,
                upgrade_domains=_int(doc, "upgrade_domains", where, 1, 100, default=1),
                user_data=template, vars=dict(variables), endpoints=_endpoints(doc, where))


def parse_roles(text: str, folder: Path | None = None, source: str = "roles file",
                read: TemplateReader | None = None) -> list[Role]:
    """Every role in the file, or one InvalidInput naming the first problem. Templates
    come from `read`, or from files next to the roles file (`folder`)."""
    reader = read or folder_reader(folder or Path.cwd())
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise InvalidInput(f"{source}: invalid YAML{at}: {problem}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("roles"), list):
        raise InvalidInput(f"{source}: expected a top-level 'roles:' list")
    roles = [parse_role(item, i, reader) for i, item in enumerate(doc["roles"])]
    seen: set[str] = set()
    for role in roles:
        if role.name in seen:
            raise InvalidInput(f"{source}: role {role.name!r} is defined twice")
        seen.add(role.name)
    return roles


def template_names(text: str) -> list[str]:
    """The user_data templates a roles file names (for a client that sends them along)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    roles = doc.get("roles") if isinstance(doc, dict) else None
    return sorted({r["user_data"] for r in roles or [] if isinstance(r, dict) and isinstance(r.get("user_data"), str)})
