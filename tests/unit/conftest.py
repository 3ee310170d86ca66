"""Fixtures shared by unit tests: a store on a fresh SQLite file."""

import pytest

from provisioner.store import Store
from tests.unit.stores import new_store


@pytest.fixture
def store(tmp_path):
    s = new_store(tmp_path)
    yield s
    s.close()
