"""Fixtures shared by unit tests: a store on a fresh SQLite file."""

import pytest

from provisioner.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite")
    yield s
    s.close()
