"""Opening a database through SQLAlchemy Core, and upgrading its schema at start-up.

Both services keep state in SQLite (the default, a file under ./var/) or PostgreSQL. The schema
is a numbered list of steps per component; each start applies the steps not yet recorded in
`schema_migrations`, so a later version extends the list instead of rewriting a CREATE.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shared.errors import ConfigError

Migration = Callable[[Connection], None]

# What a checkpointed WAL is cut back to: a few seconds of writes at full speed.
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024

_migrations_table = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("component", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)


def normalise_url(url: str) -> str:
    """Accept the plain `postgresql://` form users write and pick the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith(("sqlite:", "postgresql+psycopg:")):
        return url
    raise ConfigError("database URL must start with sqlite:/// or postgresql://")


def create_database_engine(url: str, **engine_options: Any) -> Engine:
    """An engine with the settings this project relies on for either database."""
    url = normalise_url(url)
    # Statement parameters are user data (names, addresses); errors must not carry them into
    # logs.
    engine_options.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        return _sqlite_engine(url, **engine_options)
    return sa.create_engine(url, pool_pre_ping=True, **engine_options)


def _sqlite_engine(url: str, **engine_options: Any) -> Engine:
    database = sa.engine.make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, **engine_options)

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # Take transaction control from the sqlite3 module, which would run DDL outside any
        # transaction and begin lazily; see the "begin" hook below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL keeps the file consistent through crashes and lets a reader outside any
        # transaction see the last commit; busy_timeout makes competing transactions (two
        # registrations, a relay) wait for the lock instead of failing at once.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # A checkpoint leaves the WAL file at its largest; this truncates it back after one,
        # so a burst of writes (a retention sweep) does not keep its size on disk for good.
        cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin_immediately(connection: Connection) -> None:
        # Taking the write lock at BEGIN means a transaction that reads and then writes never
        # fails half-way with SQLITE_BUSY; it waits (busy_timeout) for its turn instead. Reads
        # take it too (SQLAlchemy begins every transaction the same way); each is short.
        # Straight on the driver's connection: through `exec_driver_sql` this one statement
        # cost as much CPU as the statement the transaction is for.
        driver_connection = connection.connection.driver_connection
        assert isinstance(driver_connection, sqlite3.Connection)
        try:
            driver_connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            # Raised outside SQLAlchemy's statement path, so not wrapped by it: wrap it here,
            # as callers tell a locked or broken database apart by SQLAlchemy's classes.
            raise sa.exc.OperationalError("BEGIN IMMEDIATE", None, error) from error

    return engine


def checkpoint_quietly(engine: Engine) -> None:
    """Copy what the WAL holds into the database file, without waiting for anyone.

    For bulk housekeeping on SQLite, between its batches: otherwise the commit that crosses
    the auto-checkpoint threshold (often a registration's) does that copying. PASSIVE takes no
    lock that writers wait for and does what it can while they go on.
    """
    with engine.connect() as connection:
        driver_connection = connection.connection.driver_connection
        assert isinstance(driver_connection, sqlite3.Connection)
        driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def relax_commit_for_housekeeping(connection: Connection) -> None:
    """On PostgreSQL, let this transaction's commit return before its WAL reaches the disk.

    For retention batches only: a crash may undo the last ones, which the next run deletes
    again. Their commits then add no flush of their own to the ones registrations and emails
    wait for.
    """
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL synchronous_commit = off")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def apply_migrations(engine: Engine, component: str, steps: Sequence[Migration]) -> int:
    """Apply the steps of `component` not yet applied, each in its own transaction.

    Returns the schema version now in place. Safe to run from several processes at once: a
    step that loses the race is rolled back, and the version is read again.
    """
    attempts = 5
    for attempt in range(1, attempts + 1):
        try:
            _migrations_table.create(engine, checkfirst=True)
            return _apply_pending(engine, component, steps)
        except (sa.exc.IntegrityError, sa.exc.OperationalError, sa.exc.ProgrammingError):
            # Another process created the same table or step first; read the version again.
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _apply_pending(engine: Engine, component: str, steps: Sequence[Migration]) -> int:
    for number, step in enumerate(steps, start=1):
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                # Serialise migrating processes; SQLite's BEGIN IMMEDIATE already does.
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext(:component))"),
                    {"component": component},
                )
            version = _version_in(connection, component)
            if version >= number:
                continue
            step(connection)
            if version == 0:
                connection.execute(
                    _migrations_table.insert().values(component=component, version=number)
                )
            else:
                connection.execute(
                    _migrations_table.update()
                    .where(_migrations_table.c.component == component)
                    .values(version=number)
                )
    return _current_version(engine, component)


def _current_version(engine: Engine, component: str) -> int:
    with engine.connect() as connection:
        return _version_in(connection, component)


def _version_in(connection: Connection, component: str) -> int:
    version = connection.execute(
        sa.select(_migrations_table.c.version).where(_migrations_table.c.component == component)
    ).scalar_one_or_none()
    return int(version or 0)
