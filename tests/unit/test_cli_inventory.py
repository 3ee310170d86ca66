import pytest

from provisioner.cli.inventory import load_inventory
from provisioner.errors import InvalidInput


def write(tmp_path, text):
    (tmp_path / "pw").write_text("secret\n")
    f = tmp_path / "inv.yaml"
    f.write_text(text)
    return f


GOOD = """nodes:
  - {name: a, mac: "52:54:00:00:00:01", rack: rack-1, bmc: {address: "10.0.0.1:6230", username: admin, password_file: pw, cipher_suite: 3}}
  - {mac: "52-54-00-00-00-02", rack: rack-2, bmc: {address: 10.0.0.2, username: admin, password_file: pw}}
"""


def test_inventory_becomes_enroll_requests(tmp_path):
    bodies = load_inventory(write(tmp_path, GOOD))
    assert bodies[0] == {"mac": "52:54:00:00:00:01", "rack": "rack-1", "name": "a", "bmc": {
        "address": "10.0.0.1:6230", "username": "admin", "password": "secret", "cipher_suite": 3}}
    assert bodies[1]["mac"] == "52:54:00:00:00:02" and "name" not in bodies[1]


@pytest.mark.parametrize("text, words", [
    ("nodes: [", "not valid YAML"),
    ("hosts: []", "non-empty 'nodes:'"),
    (GOOD.replace("52-54-00-00-00-02", "52:54:00:00:00:01"), "appears twice"),
    (GOOD.replace("52:54:00:00:00:01", "52:54:00:00:00:0g"), "node 1: malformed MAC"),
    (GOOD.replace("password_file: pw}}\n", "password: x}}\n"), "password_file is required"),
    (GOOD.replace("password_file: pw, cipher", "password_file: nope, cipher"), "cannot read BMC password file"),
])
def test_bad_inventories_are_refused_whole(tmp_path, text, words):
    with pytest.raises(InvalidInput, match=words):
        load_inventory(write(tmp_path, text))
