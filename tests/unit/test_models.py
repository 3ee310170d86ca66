import pytest

from provisioner.errors import InvalidInput
from provisioner.models import BmcCredentials, normalize_mac, parse_bmc_address, validate_name
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
