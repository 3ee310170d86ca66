import pytest

from provisioner.errors import ConfigError
from provisioner.secrets import Secret, SecretBox


def test_sealed_secret_round_trips_and_hides_plaintext(tmp_path):
    box = SecretBox(tmp_path / "key")
    sealed = box.seal(Secret("p4ssw0rd"))
    assert "p4ssw0rd" not in sealed
    assert box.open(sealed).reveal() == "p4ssw0rd"
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600
    assert SecretBox(tmp_path / "key").open(sealed).reveal() == "p4ssw0rd"


def test_a_replaced_key_is_a_clear_error(tmp_path):
    sealed = SecretBox(tmp_path / "a").seal(Secret("x"))
    with pytest.raises(ConfigError, match="key file"):
        SecretBox(tmp_path / "b").open(sealed)
