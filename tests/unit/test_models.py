import pytest

from provisioner.errors import InvalidInput
from provisioner.models import (BmcCredentials, check_bmc_login, normalize_mac, parse_bmc_address, parse_host_address,
                               parse_port, validate_name)
from provisioner.secrets import Secret


@pytest.mark.parametrize("text", ["52:54:00:AB:cd:01", "52-54-00-ab-cd-01", "525400abcd01", " 52:54:00:ab:cd:01 "])
def test_mac_spellings_normalize(text):
    assert normalize_mac(text) == "52:54:00:ab:cd:01"


@pytest.mark.parametrize("text", ["", "52:54:00:ab:cd", "52:54:00:ab:cd:zz", "52:54:00:ab:cd:01:02",
                                  "52:54-00:ab:cd:01", "01:00:5e:00:00:01", "../../etc"])
def test_malformed_macs_are_refused_with_a_clear_message(text):
    with pytest.raises(InvalidInput) as err:
        normalize_mac(text)
    assert "MAC" in str(err.value)


def test_bmc_address_forms():
    assert parse_bmc_address("10.0.0.5") == ("10.0.0.5", 623)
    assert parse_bmc_address("10.0.0.5:6230") == ("10.0.0.5", 6230)
    assert parse_bmc_address("[fd00::5]:6230") == ("fd00::5", 6230)
    assert parse_bmc_address("bmc-7.lab") == ("bmc-7.lab", 623)
    for bad in ("", "10.0.0.5:0", "10.0.0.5:http", "10.0.0.5:70000"):
        with pytest.raises(InvalidInput):
            parse_bmc_address(bad)


def test_names_are_dns_labels():
    assert validate_name("rack-3") == "rack-3"
    for bad in ("Rack3", "-x", "a_b", "", "x" * 64, "../x"):
        with pytest.raises(InvalidInput):
            validate_name(bad)


def test_credentials_never_show_the_password():
    creds = BmcCredentials("10.0.0.5", 623, "admin", Secret("hunter2"), 3)
    assert "hunter2" not in repr(creds) and "hunter2" not in str(creds)
    assert "hunter2" not in repr(creds.password) and "hunter2" not in f"{creds.password}"


@pytest.mark.parametrize("text", ["00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "33:33:00:00:00:01"])
def test_macs_no_nic_can_have_are_refused(text):
    with pytest.raises(InvalidInput, match="MAC"):
        normalize_mac(text)


@pytest.mark.parametrize("text, expected", [
    ("10.0.5.21", "10.0.5.21"), ("fe80::0001", "fe80::1"), ("bmc-7.rack3.example.org", "bmc-7.rack3.example.org"),
    ("BMC7.Example.", "bmc7.example."), ("r3n01", "r3n01")])
def test_host_addresses_are_ips_or_dns_names(text, expected):
    assert parse_host_address(text) == expected


@pytest.mark.parametrize("text", [
    "", "0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "10.0.0.999", "1.2.3", "-bmc", "bmc-", "b_m_c",
    "bmc..example", "é.example", "a" * 64, ".".join(["a" * 60] * 5), "bmc example", "bmc/../x", "bmc\x00"])
def test_host_addresses_no_machine_can_have_are_refused(text):
    with pytest.raises(InvalidInput, match="address"):
        parse_host_address(text)


@pytest.mark.parametrize("value, ok", [(1, True), (65535, True), ("623", True), (0, False), (65536, False),
                                       (-1, False), (True, False), (6.23, False), ("6x", False), ("٦٢٣", False),
                                       (None, False)])
def test_ports(value, ok):
    if ok:
        assert parse_port(value, "port") == int(value)
    else:
        with pytest.raises(InvalidInput, match="port"):
            parse_port(value, "port")


@pytest.mark.parametrize("user, password, ok", [
    ("admin", "x" * 20, True), ("a" * 16, "pw", True), ("a" * 17, "pw", False), ("admin", "x" * 21, False),
    ("", "pw", False), ("admin", "", False), ("adm\nin", "pw", False), ("admin", "p\x00w", False),
    ("admin", "pässword", False)])
def test_bmc_logins_are_what_an_ipmi_bmc_can_hold(user, password, ok):
    if ok:
        check_bmc_login(user, password)
    else:
        with pytest.raises(InvalidInput, match="BMC"):
            check_bmc_login(user, password)


def test_bmc_address_with_a_port_out_of_range_or_a_bad_host():
    for text in ("10.0.0.9:0", "10.0.0.9:70000", "10.0.0.9:x", "0.0.0.0", "300.1.1.1:623"):
        with pytest.raises(InvalidInput):
            parse_bmc_address(text)
