"""What a guest is made of, as text: its libvirt domain XML (jinja2 template) and its
config drive's files (cloud-init NoCloud: meta-data, and user-data rendered from the
role's jinja2 template with per-guest variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from ..errors import InvalidInput
from .placement import Guest
from .roles import Role

TEMPLATES = Path(__file__).parent / "templates"
NAMESPACE = "https://provisioner.invalid/xmlns/guest/1"
DEFAULT_USER_DATA = "#cloud-config\nhostname: {{ guest.name }}\n"

_files = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                            autoescape=jinja2.select_autoescape(["xml.j2"]), keep_trailing_newline=True)
_user = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


def domain_xml(guest: Guest, *, domain_type: str, overlay: str, config_drive: str, console_log: str,
               base_sha256: str, app: str | None = None, app_format: str = "raw",
               app_sha256: str | None = None, mac: str | None = None, bridge: str | None = None) -> str:
    """bridge and mac: the guest's NIC on the host's bridge (the guest network); without
    them, a user-mode NIC that reaches out but that nothing can reach."""
    return _files.get_template("domain.xml.j2").render(
        name=guest.name, role=guest.role, index=guest.index, namespace=NAMESPACE, memory_mib=guest.memory_mib,
        cores=list(guest.cores), domain_type=domain_type, overlay=overlay, config_drive=config_drive,
        console_log=console_log, base_sha256=base_sha256, app=app, app_format=app_format, app_sha256=app_sha256,
        upgrade_domain=guest.upgrade_domain, mac=mac if bridge else None, bridge=bridge)


def config_files(role: Role, guest: Guest, host: str, network_config: str | None = None,
                 address: str | None = None, image: str | None = None) -> dict[str, str]:
    """meta-data, user-data and (on a guest network) network-config for the guest's config
    drive. A template that uses a variable nobody defined, or is not valid jinja2, is the
    operator's input error. meta-data also says the role and the base image (as the roles
    file names it), which a guest may show."""
    context: dict[str, Any] = {"guest": {"name": guest.name, "role": guest.role, "index": guest.index,
                                         "host": host, "cores": list(guest.cores),
                                         "memory_mib": guest.memory_mib, "address": address},
                               "vars": role.vars, **role.vars}
    try:
        user_data = _user.from_string(role.user_data or DEFAULT_USER_DATA).render(**context)
    except jinja2.TemplateError as exc:
        raise InvalidInput(f"role {role.name}: its user_data template fails for {guest.name}: {exc}") from exc
    meta = (f"instance-id: {guest.name}\nlocal-hostname: {guest.name}\nprovisioner-role: {role.name}\n"
            f"provisioner-image: {image or role.base}\n")
    files = {"meta-data": meta, "user-data": user_data}
    if network_config is not None:
        files["network-config"] = network_config
    return files
