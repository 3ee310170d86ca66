"""Enrollment: validate everything, prove the BMC answers to the credentials, then
record the node (password sealed), tell DHCP, and start inspection. Bad input changes
nothing."""

from __future__ import annotations

import logging
from typing import Any, Callable

from ..errors import BmcAuthError, BmcUnreachable, Conflict, InvalidInput, PowerError
from ..models import (BmcCredentials, BmcDriver, Node, check_bmc_login, check_redfish_login, normalize_mac,
                      parse_bmc_address, parse_port, parse_redfish_address, parse_system, validate_name)
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
        if not isinstance(body.get("inspect", True), bool):
            raise InvalidInput("inspect must be true or false")
        candidates = self._candidates(bmc_doc)
        # Refuse before storing anything if the MAC or the name is taken...
        existing = self.conductor.store.find_node_by_mac(mac)
        if existing is not None:
            raise Conflict(f"MAC {mac} is already enrolled as node {existing.name}")
        if self.conductor.store.name_taken(name):
            raise Conflict(f"a node named {name} already exists")
        # ...and if the BMC does not answer to these credentials.
        bmc = self._probe(candidates)
        secure_boot = self._secure_boot(bmc)
        node = self.conductor.store.create_node(name=name, mac=mac, rack=rack, bmc_address=bmc.address,
                                                bmc_port=bmc.port, bmc_username=bmc.username,
                                                bmc_password_sealed=self.conductor.box.seal(bmc.password),
                                                cipher_suite=bmc.cipher_suite, bmc_driver=bmc.driver,
                                                bmc_system=bmc.system, secure_boot=secure_boot)
        self.on_nodes_changed()
        if body.get("inspect", True):
            node = self.inspection.start(node)
        return node

    def _candidates(self, doc: dict[str, Any]) -> list[BmcCredentials]:
        """The BMC as the request describes it: one protocol when it says which (or its
        address is an https URL), else Redfish then IPMI, as detection tries them."""
        text = str(doc.get("address", ""))
        raw_driver = doc.get("driver")
        if raw_driver is not None and raw_driver not in tuple(BmcDriver):
            raise InvalidInput(f"invalid bmc.driver {raw_driver!r}: use ipmi or redfish")
        if raw_driver is not None:
            drivers = [BmcDriver(raw_driver)]
        elif "://" in text:
            drivers = [BmcDriver.REDFISH]
        else:
            drivers = [BmcDriver.REDFISH, BmcDriver.IPMI]
        username, password = doc.get("username") or "", doc.get("password") or ""
        if not isinstance(username, str) or not isinstance(password, str):
            raise InvalidInput("the BMC username and password must be strings")
        system = parse_system(doc.get("system"))
        suite = _integer(doc.get("cipher_suite") or self.conductor.settings.power_cipher_suite, "bmc.cipher_suite")
        if suite not in (3, 17):
            raise InvalidInput(f"IPMI cipher suite {suite} is not supported: use 3 or 17")
        if system is not None and drivers == [BmcDriver.IPMI]:
            raise InvalidInput("bmc.system is a Redfish path: an IPMI BMC has none")
        found, refused = [], []
        for driver in drivers:
            try:
                found.append(self._credentials(driver, doc, text, username, password, suite, system))
            except InvalidInput as exc:  # e.g. a password too long for IPMI: that protocol is out
                refused.append(exc)
        if not found:
            raise refused[0]
        return found

    @staticmethod
    def _credentials(driver: BmcDriver, doc: dict[str, Any], text: str, username: str, password: str,
                     suite: int, system: str | None) -> BmcCredentials:
        if driver == BmcDriver.REDFISH:
            check_redfish_login(username, password)
            address, port = parse_redfish_address(text)
        else:
            check_bmc_login(username, password)
            address, port = parse_bmc_address(text)
            system = None
        if doc.get("port") is not None:
            port = parse_port(doc["port"], "bmc.port")
        return BmcCredentials(address, port, username, Secret(password), suite, driver, system)

    def _probe(self, candidates: list[BmcCredentials]) -> BmcCredentials:
        """The first candidate whose BMC answers. A refused password ends the search: that
        protocol is there, with other credentials. Anything else (nobody there, a web
        server that is no Redfish service, a certificate that does not verify) moves on to
        the next protocol; if none answers, the most telling error is the answer."""
        telling: PowerError | None = None
        for bmc in candidates:
            try:
                self.conductor.power.probe(bmc)
                return bmc
            except BmcAuthError:
                raise
            except PowerError as exc:
                if bmc is candidates[-1]:
                    raise (telling if telling is not None and isinstance(exc, BmcUnreachable) else exc) from None
                LOG.info("BMC %s: no %s there (%s); trying %s", bmc.endpoint, bmc.driver.label, exc,
                         candidates[-1].driver.label)
                if not isinstance(exc, BmcUnreachable):
                    telling = exc
        raise AssertionError("no candidates")  # _candidates returns at least one

    def _secure_boot(self, bmc: BmcCredentials) -> bool:
        """Whether the firmware enforces Secure Boot now, as the BMC says: the provisioner
        keeps it so for the host (a BMC that cannot say counts as no)."""
        try:
            return bool(self.conductor.power.secure_boot(bmc))
        except PowerError as exc:
            LOG.warning("BMC %s: its Secure Boot state could not be read (%s); taken as off", bmc.endpoint, exc)
            return False

    def delete(self, node: Node) -> None:
        """Forget a node in a stable state; DHCP stops answering its MAC."""
        self.conductor.store.delete_node(node)
        self.on_nodes_changed()
