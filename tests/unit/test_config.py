from pathlib import Path

import pytest

from provisioner import config
from provisioner.errors import ConfigError


def test_defaults_need_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", tmp_path / "absent.toml")
    s = config.load(environ={})
    assert s.server_http_port == 8080 and s.server_tftp_port == 69
    assert s.dhcp_range == "10.99.0.100,10.99.0.199" and s.dhcp_unknown_macs == "ignore"
    assert s.artifacts_dir == s.data_dir / "boot"


def test_file_then_environment_then_flags(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[server]\nhttp_port = 9000\ndata_dir = "/srv/p"\n[dhcp]\nmode = "proxy"\n')
    s = config.load(f, environ={})
    assert (s.server_http_port, s.data_dir, s.dhcp_mode) == (9000, Path("/srv/p"), "proxy")
    s = config.load(f, environ={"PROVISIONER_SERVER_HTTP_PORT": "9100"})
    assert s.server_http_port == 9100
    s = config.load(f, {"server.http_port": "9200"}, environ={"PROVISIONER_SERVER_HTTP_PORT": "9100"})
    assert s.server_http_port == 9200


def test_short_environment_aliases(tmp_path):
    s = config.load(tmp_path / "x.toml" if False else None, environ={"PROVISIONER_API": "http://h:1"})
    assert s.client_api == "http://h:1"


@pytest.mark.parametrize("doc, words", [
    ('[server]\nhttp_port = "x"\n', "http_port"),
    ('[server]\nnope = 1\n', "unknown setting"),
    ('[dhcp]\nmode = "relay"\n', "dhcp.mode"),
    ('[dhcp]\nunknown_macs = "answer"\n', "unknown_macs"),
    ('[power]\ncipher_suite = 2\n', "cipher_suite"),
    ('not toml [', "config file"),
])
def test_bad_config_is_one_clear_error(tmp_path, doc, words):
    f = tmp_path / "p.toml"
    f.write_text(doc)
    with pytest.raises(ConfigError) as err:
        config.load(f, environ={})
    assert words in str(err.value)


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError):
        config.load(tmp_path / "missing.toml", environ={})
