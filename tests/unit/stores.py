"""The store a unit test works on: a fresh SQLite file by default; with
PROVISIONER_TEST_POSTGRESQL set to a PostgreSQL URL (the functional tier sets it to a
throwaway server and runs this tier again), a fresh schema of that database, so the same
tests check both engines."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import quote

from provisioner.store import Store


def new_store(tmp_path: Path | None = None) -> Store:
    base = os.environ.get("PROVISIONER_TEST_POSTGRESQL")
    if base:
        import psycopg

        schema = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return Store(f"{base}&options={quote(f'-csearch_path={schema}')}")
    return Store(tmp_path / f"db-{uuid.uuid4().hex[:8]}.sqlite" if tmp_path is not None else ":memory:")


def on_postgresql() -> bool:
    return bool(os.environ.get("PROVISIONER_TEST_POSTGRESQL"))
