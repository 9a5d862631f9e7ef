"""Schema upgrades at start-up: applied once, extended by later versions, on both databases."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shared.database import apply_migrations, create_database_engine, normalise_url
from shared.errors import ConfigError


def _create(table: str) -> Callable[[Connection], None]:
    def step(connection: Connection) -> None:
        connection.execute(sa.text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)"))

    return step


def _tables(url: str) -> set[str]:
    engine = create_database_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_steps_apply_once_and_a_later_version_extends(database_url: str) -> None:
    engine = create_database_engine(database_url)
    assert apply_migrations(engine, "demo", [_create("first")]) == 1
    assert apply_migrations(engine, "demo", [_create("first")]) == 1  # nothing re-run
    assert apply_migrations(engine, "demo", [_create("first"), _create("second")]) == 2
    assert apply_migrations(engine, "other", [_create("third")]) == 1
    engine.dispose()
    assert {"first", "second", "third", "schema_migrations"} <= _tables(database_url)


def test_concurrent_starts_migrate_once(database_url: str) -> None:
    def start() -> int:
        engine = create_database_engine(database_url)
        try:
            return apply_migrations(engine, "demo", [_create("alpha"), _create("beta")])
        finally:
            engine.dispose()

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: start(), range(4))) == [2, 2, 2, 2]


def test_urls_users_write_are_accepted() -> None:
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///var/x.sqlite3") == "sqlite:///var/x.sqlite3"
    with pytest.raises(ConfigError, match="sqlite"):
        normalise_url("mysql://h/db")


def test_a_locked_sqlite_database_fails_as_sqlalchemy_error_at_begin(tmp_path: Path) -> None:
    # Callers (the relay's "database unavailable, retrying", the worker's StoreUnavailable)
    # recognise a locked database by SQLAlchemy's class, also when BEGIN IMMEDIATE is refused.
    engine = create_database_engine(f"sqlite:///{tmp_path}/locked.sqlite3")
    holder = sqlite3.connect(tmp_path / "locked.sqlite3", isolation_level=None)
    try:
        with engine.connect() as connection:
            # Straight on the driver: through SQLAlchemy the PRAGMA would begin a transaction.
            driver = connection.connection.driver_connection
            assert isinstance(driver, sqlite3.Connection)
            driver.execute("PRAGMA busy_timeout=50")
            holder.execute("BEGIN EXCLUSIVE")
            with pytest.raises(sa.exc.OperationalError, match="locked"), connection.begin():
                pass
    finally:
        holder.close()
        engine.dispose()


def test_a_fixed_pool_on_a_server_database_opens_no_connection_beyond_its_size(
    postgres_url: str,
) -> None:
    engine = create_database_engine(postgres_url, connections=2, pool_timeout=0.2)
    try:
        # Both taken, a third waits for one to come back, and none is opened for it.
        with engine.connect(), engine.connect(), pytest.raises(sa.exc.TimeoutError):
            engine.connect()
        with engine.connect(), engine.connect():
            pass  # the two came back to the pool and serve again
    finally:
        engine.dispose()


def test_sqlite_ignores_the_pool_size(tmp_path: Path) -> None:
    # Its writers share one lock; a reader of the same file must not wait for a pool slot.
    engine = create_database_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}", connections=1)
    try:
        with engine.connect(), engine.connect():
            pass
    finally:
        engine.dispose()
