"""Opening a database through SQLAlchemy Core, and upgrading its schema at start-up.

Both services keep state in SQLite (the default, a file under ./var/) or PostgreSQL. The schema
is a numbered list of steps per component; each start applies the steps not yet recorded in
`schema_migrations`, so a later version extends the list instead of rewriting a CREATE.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from shared.errors import ConfigError, TransientError

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


def create_database_engine(
    url: str, *, connections: int | None = None, **engine_options: Any
) -> Engine:
    """An engine with the settings this project relies on for either database.

    `connections`: on a server database, the pool's fixed size, none opened beyond it. With
    SQLAlchemy's default (5 kept, 10 more opened when needed and closed when returned to a
    full pool) each burst of many threads pays log-ins; a fixed pool also bounds what the
    processes sharing one server take of its `max_connections`. SQLite ignores it: its
    writers share one lock, and the default pool serves them.
    """
    url = normalise_url(url)
    # Statement parameters are user data (names, addresses); errors must not carry them into
    # logs.
    engine_options.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        return _sqlite_engine(url, **engine_options)
    if connections is not None:
        engine_options.update(pool_size=connections, max_overflow=0)
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
        # FULL, not NORMAL: in WAL mode NORMAL syncs the WAL only at checkpoints, so "a
        # transaction committed in WAL mode with synchronous=NORMAL might roll back following a
        # power loss or system crash" (https://www.sqlite.org/pragma.html#pragma_synchronous);
        # FULL syncs the WAL at every commit (https://www.sqlite.org/wal.html, "Performance
        # Considerations"). A registration `register` confirmed, perhaps already published, and
        # the worker's "sent" mark must outlive a power cut, or the user exists in the broker
        # only, or gets the email twice. Its cost is in docs/PERFORMANCE.md.
        cursor.execute("PRAGMA synchronous=FULL")
        # A checkpoint leaves the WAL file at its largest; this truncates it back after one,
        # so a burst of writes (a retention sweep) does not keep its size on disk for good.
        cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin_immediately(connection: Connection) -> None:
        # Taking the write lock at BEGIN means a transaction that reads and then writes never
        # fails half-way with SQLITE_BUSY; it waits (busy_timeout) for its turn instead. Reads
        # take it too (SQLAlchemy begins every transaction the same way); each is short.
        # Straight on the driver's connection: through SQLAlchemy, this statement cost as much
        # as the one the transaction is for.
        driver_connection = connection.connection.driver_connection
        assert isinstance(driver_connection, sqlite3.Connection)
        try:
            driver_connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            # Raised outside SQLAlchemy's statement path, so not wrapped by it: wrap it here,
            # as callers tell a locked or broken database apart by SQLAlchemy's classes.
            raise sa.exc.OperationalError("BEGIN IMMEDIATE", None, error) from error

    return engine


class db_now(sa.sql.functions.FunctionElement[float]):  # noqa: N801 - reads as a SQL function
    """The database's clock, in seconds since the epoch, as a SQL expression.

    Leases are decided by this clock, never by the claiming process's: every process sharing a
    database (workers or relays on several hosts, for PostgreSQL) then compares its lease with
    one and the same clock, and a host whose clock runs ahead cannot take over a live claim. It
    compiles per dialect, so a statement using it is built once and serves both databases.
    """

    type = sa.Float()
    inherit_cache = True


@compiles(db_now, "postgresql")
def _postgresql_now(_element: db_now, _compiler: SQLCompiler, **_options: Any) -> str:
    # clock_timestamp(), not now(): now() is the transaction's start, which can lie behind by
    # however long the transaction waited for a row lock.
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"


@compiles(db_now, "sqlite")
def _sqlite_now(_element: db_now, _compiler: SQLCompiler, **_options: Any) -> str:
    # julianday counts days from noon, 24 November 4714 BC; 2440587.5 is 1970-01-01 00:00 UTC.
    # (unixepoch('subsec') would say it directly, but needs SQLite 3.42.) Millisecond precision.
    return "((julianday('now') - 2440587.5) * 86400.0)"


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


# ---- errors at start-up ---------------------------------------------------------------------

# Driver messages that mean the URL names something that is not there or not ours: fixing them
# takes a change of configuration, not waiting.
_CONFIGURATION_PROBLEMS: Final = re.compile(
    r"does not exist|authentication failed|no password supplied|unable to open database file"
    r"|readonly database|not a database|permission denied|is a directory",
    re.IGNORECASE,
)


class DatabaseUnreachable(TransientError):
    """The database named by the URL did not answer (down, or a network problem)."""


def reason_of(error: BaseException) -> str:
    """The driver's exception type and first line, white space collapsed: fit for one line.

    The first line names the problem and never a password; SQLAlchemy's own text would add the
    statement, and a driver's later lines (PostgreSQL's DETAIL) the values.
    """
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    first_line = re.sub(r"\s+", " ", lines[0]) if lines else ""
    return f"{type(original).__name__}: {first_line}".rstrip(": ")


@contextmanager
def naming_the_variable(variable: str, url: str) -> Iterator[None]:
    """Turn a failure to open the database into an error naming `variable` and the reason.

    A malformed URL, a missing database, a refused login or an unusable SQLite path raises
    `ConfigError` (exit 2); anything else `DatabaseUnreachable`. The URL itself is never quoted
    (it may hold a password); an SQLite file's path is.
    """
    try:
        sa.engine.make_url(normalise_url(url))
    except (sa.exc.ArgumentError, ValueError, ConfigError):
        # A port that is not a number, say: the parser's message would quote the URL.
        raise ConfigError(f"{variable} is not a valid database URL") from None
    try:
        yield
    except OSError as error:
        # The SQLite file's folder could not be created.
        raise ConfigError(
            f"{variable} names a path that cannot be used: "
            f"{error.strerror or type(error).__name__}: {error.filename}"
        ) from None
    except sa.exc.SQLAlchemyError as error:
        reason = reason_of(error)
        where = _sqlite_path(url)
        subject = f"{variable} (SQLite file {where})" if where else variable
        if _CONFIGURATION_PROBLEMS.search(reason):
            raise ConfigError(f"{subject}: the database cannot be used: {reason}") from None
        raise DatabaseUnreachable(f"{subject}: the database is unavailable: {reason}") from None


def _sqlite_path(url: str) -> str | None:
    if not url.startswith("sqlite"):
        return None
    try:
        database = sa.engine.make_url(url).database
    except (sa.exc.ArgumentError, ValueError):
        return None
    return str(Path(database).resolve()) if database and database != ":memory:" else None


def check_database(url: str, variable: str) -> None:
    """Connect once, at start-up, so a bad URL is reported naming `variable` and the reason."""
    with naming_the_variable(variable, url):
        engine = create_database_engine(url)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
