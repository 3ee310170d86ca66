"""Enrollment: validate everything, prove the BMC answers to the credentials, then
record the node (password sealed), tell DHCP, and start inspection. Bad input changes
nothing."""

from __future__ import annotations

import logging
from typing import Any, Callable

from ..errors import Conflict, InvalidInput
from ..models import (BmcCredentials, Node, check_bmc_login, normalize_mac, parse_bmc_address, parse_port,
                      validate_name)
from ..secrets import Secret
from .engine import Conductor
from .inspect import InspectionFlow

LOG = logging.getLogger(__name__)


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isascii() \
            or not str(value).lstrip("-").isdigit():
        raise InvalidInput(f"{what} must be a whole number, not {value!r}")
    return int(value)


class EnrollService:
    def __init__(self, conductor: Conductor, inspection: InspectionFlow,
                 on_nodes_changed: Callable[[], None]) -> None:
        self.conductor = conductor
        self.inspection = inspection
        self.on_nodes_changed = on_nodes_changed

    def enroll(self, body: dict[str, Any]) -> Node:
        mac = normalize_mac(str(body.get("mac", "")))
        rack = validate_name(str(body.get("rack") or ""), "rack name")
        name = validate_name(str(body.get("name") or f"node-{mac.replace(':', '')[-6:]}"), "node name")
        bmc_doc = body.get("bmc")
        if not isinstance(bmc_doc, dict):
            raise InvalidInput("bmc must be an object with address, username and password")
        address, port = parse_bmc_address(str(bmc_doc.get("address", "")))
        if bmc_doc.get("port") is not None:
            port = parse_port(bmc_doc["port"], "bmc.port")
        username = bmc_doc.get("username") or ""
        password = bmc_doc.get("password") or ""
        if not isinstance(username, str) or not isinstance(password, str):
            raise InvalidInput("the BMC username and password must be strings")
        check_bmc_login(username, password)
        if not isinstance(body.get("inspect", True), bool):
            raise InvalidInput("inspect must be true or false")
        suite = _integer(bmc_doc.get("cipher_suite") or self.conductor.settings.power_cipher_suite, "bmc.cipher_suite")
        if suite not in (3, 17):
            raise InvalidInput(f"IPMI cipher suite {suite} is not supported: use 3 or 17")
        # Refuse before storing anything if the MAC or the name is taken...
        existing = self.conductor.store.find_node_by_mac(mac)
        if existing is not None:
            raise Conflict(f"MAC {mac} is already enrolled as node {existing.name}")
        if any(n.name == name for n in self.conductor.store.list_nodes()):
            raise Conflict(f"a node named {name} already exists")
        # ...and if the BMC does not answer to these credentials.
        bmc = BmcCredentials(address, port, username, Secret(password), suite)
        self.conductor.power.probe(bmc)
        node = self.conductor.store.create_node(name=name, mac=mac, rack=rack, bmc_address=address,
                                        bmc_port=port, bmc_username=username,
                                        bmc_password_sealed=self.conductor.box.seal(bmc.password),
                                        cipher_suite=suite)
        self.on_nodes_changed()
        if body.get("inspect", True):
            node = self.inspection.start(node)
        return node

    def delete(self, node: Node) -> None:
        """Forget a node in a stable state; DHCP stops answering its MAC."""
        self.conductor.store.delete_node(node)
        self.on_nodes_changed()
