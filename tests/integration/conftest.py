"""Fixtures of the integration tests, on top of those in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A service's database: an SQLite file, or a fresh PostgreSQL database.

    The SQLite file's folder does not exist yet: opening the database must create it, as a
    first local run does for ./var/.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state/database.sqlite3"
    url: str = request.getfixturevalue("postgres_url")
    return url
