"""Reading an inventory file for `enroll --from`: checked whole before anything is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import InvalidInput
from ..models import (BmcDriver, check_bmc_login, check_redfish_login, normalize_mac, parse_bmc_address,
                      parse_redfish_address, parse_system, validate_name)


def read_password_file(path: Path) -> str:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read BMC password file {path}: {exc.strerror}") from exc
    password = text.rstrip("\r\n")
    if not password:
        raise InvalidInput(f"BMC password file {path} is empty")
    return password


def load_inventory(path: Path) -> list[dict[str, Any]]:
    """Enroll request bodies from an inventory YAML file; InvalidInput names the entry."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidInput(f"cannot read inventory {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InvalidInput(f"inventory {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or not doc["nodes"]:
        raise InvalidInput(f"inventory {path} must have a non-empty 'nodes:' list")
    bodies, macs, names = [], set(), set()
    for i, entry in enumerate(doc["nodes"], start=1):
        where = f"inventory {path}, node {i}"
        if not isinstance(entry, dict):
            raise InvalidInput(f"{where}: must be a mapping")
        try:
            mac = normalize_mac(str(entry.get("mac", "")))
            rack = validate_name(str(entry.get("rack", "")), "rack name")
            name = entry.get("name")
            if name is not None:
                validate_name(str(name), "node name")
            bmc = entry.get("bmc") or {}
            if not isinstance(bmc, dict):
                raise InvalidInput("bmc must be a mapping")
            driver = _check_address(bmc)
            if not bmc.get("username"):
                raise InvalidInput("bmc.username is required")
            if "password_file" not in bmc:
                raise InvalidInput("bmc.password_file is required (passwords stay out of inventories)")
            pw_path = Path(str(bmc["password_file"]))
            if not pw_path.is_absolute():
                pw_path = path.parent / pw_path
            password = read_password_file(pw_path)
            (check_bmc_login if driver == BmcDriver.IPMI else check_redfish_login)(str(bmc["username"]), password)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from exc
        if mac in macs:
            raise InvalidInput(f"{where}: MAC {mac} appears twice in the inventory")
        if name is not None and name in names:
            raise InvalidInput(f"{where}: name {name} appears twice in the inventory")
        macs.add(mac)
        names.add(name)
        body: dict[str, Any] = {"mac": mac, "rack": rack, "bmc": {
            "address": str(bmc["address"]), "username": str(bmc["username"]), "password": password}}
        if name is not None:
            body["name"] = str(name)
        if bmc.get("cipher_suite") is not None:
            body["bmc"]["cipher_suite"] = int(bmc["cipher_suite"])
        for key in ("driver", "system"):
            if bmc.get(key) is not None:
                body["bmc"][key] = str(bmc[key])
        bodies.append(body)
    return bodies


def _check_address(bmc: dict[str, Any]) -> BmcDriver | None:
    """The entry's BMC protocol, if it names one (its driver, or an https address), with its
    address and system checked the way the daemon will; None leaves detection to it."""
    driver, text = bmc.get("driver"), str(bmc.get("address", ""))
    if driver is not None and driver not in tuple(BmcDriver):
        raise InvalidInput(f"invalid bmc.driver {driver!r}: use ipmi or redfish")
    parse_system(bmc.get("system"))
    if driver == BmcDriver.REDFISH or (driver is None and "://" in text):
        parse_redfish_address(text)
        return BmcDriver.REDFISH
    parse_bmc_address(text)
    return BmcDriver(driver) if driver else None
