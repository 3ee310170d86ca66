"""The OpenAPI document's request schemas say what the parsers accept: the same patterns,
lengths and ranges, taken from the same module."""

import re

import pytest

from provisioner.api.guests import HOST_BODY
from provisioner.api.nodes import NODE_BODY
from provisioner.errors import InvalidInput
from provisioner.models import (IPMI_MAX_PASSWORD, IPMI_MAX_USERNAME, REDFISH_MAX_PASSWORD, REDFISH_MAX_USERNAME,
                                check_bmc_login, check_redfish_login, normalize_mac,
                                parse_port, validate_name)


def accepts(schema, value) -> bool:
    if schema.get("type") == "integer":
        return isinstance(value, int) and not isinstance(value, bool) and \
            schema["minimum"] <= value <= schema["maximum"]
    return isinstance(value, str) and schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 10**9) \
        and ("pattern" not in schema or re.search(schema["pattern"], value) is not None)


def parses(fn, *args) -> bool:
    try:
        fn(*args)
        return True
    except InvalidInput:
        return False


@pytest.mark.parametrize("value", ["52:54:00:12:34:56", "52-54-00-12-34-56", "525400123456", "52:54:00:12:34",
                                   "zz:54:00:12:34:56", "", "52:54:00:12:34:56:78"])
def test_mac_pattern_agrees_with_the_parser_on_shape(value):
    # (Unicast and not-all-zeros are beyond a pattern; the schema's description says so.)
    assert accepts(NODE_BODY["properties"]["mac"], value) == parses(normalize_mac, value)


@pytest.mark.parametrize("value", ["rack-1", "r", "Rack-1", "-rack", "rack-", "a" * 63, "a" * 64, "rack_1", ""])
def test_names_agree(value):
    for schema in (NODE_BODY["properties"]["rack"], NODE_BODY["properties"]["name"], HOST_BODY["properties"]["rack"]):
        assert accepts(schema, value) == parses(validate_name, value)


@pytest.mark.parametrize("value", [0, 1, 623, 65535, 65536, -1])
def test_ports_agree(value):
    for schema in (NODE_BODY["properties"]["bmc"]["properties"]["port"], HOST_BODY["properties"]["port"]):
        assert accepts(schema, value) == parses(parse_port, value, "port")


def test_bmc_login_lengths_agree():
    """The schema admits what the looser protocol (Redfish) can take; an IPMI BMC's tighter
    limits are checked by the daemon once it knows the protocol."""
    bmc = NODE_BODY["properties"]["bmc"]["properties"]
    assert bmc["username"]["maxLength"] == REDFISH_MAX_USERNAME and bmc["password"]["maxLength"] == REDFISH_MAX_PASSWORD
    for user, password in (("a" * REDFISH_MAX_USERNAME, "p"), ("a" * (REDFISH_MAX_USERNAME + 1), "p"),
                           ("admin", "p" * REDFISH_MAX_PASSWORD), ("admin", "p" * (REDFISH_MAX_PASSWORD + 1))):
        assert (accepts(bmc["username"], user) and accepts(bmc["password"], password)) == \
            parses(check_redfish_login, user, password)
    assert not parses(check_bmc_login, "a" * (IPMI_MAX_USERNAME + 1), "p")
    assert not parses(check_bmc_login, "admin", "p" * (IPMI_MAX_PASSWORD + 1))
