"""The registration service's tables and the numbered steps that create and upgrade them.

Uniqueness lives in the database, not in a check before the insert: `username_key` and
`email_key` hold the lower-cased forms under unique constraints, so of two registrations racing
for the same name or address exactly one commits.
"""

from __future__ import annotations

from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shared.database import Migration, apply_migrations

COMPONENT: Final = "producer_service"

metadata = sa.MetaData()

# BIGINT on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-incrementing rowid.
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.String(36), primary_key=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("username_key", sa.String(64), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("email_key", sa.String(320), nullable=False),
    sa.Column("full_name", sa.String(200), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("username_key", name="uq_users_username_key"),
    sa.UniqueConstraint("email_key", name="uq_users_email_key"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    # Monotonic: the relay publishes in id order, which is the order the rows were written.
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("routing_key", sa.String(255), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("headers", sa.Text, nullable=False),
    sa.Column("correlation_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=True),
    # Set while a relay (or `register`) publishes the row, outside any transaction: others skip
    # it until `claimed_until`, after which a crashed publisher's rows are claimable again.
    sa.Column("claim_token", sa.String(32), nullable=True),
    # Seconds since the epoch by the database's clock (`shared.database.db_now`), never a
    # claimant's: compares the same on every backend, without time-zone surprises.
    sa.Column("claimed_until", sa.Float, nullable=True),
    # The W3C trace context of the registration (`shared.tracing`), when tracing was on: the
    # publisher of the row, at commit or much later, continues that trace. 55 characters today;
    # room for a later version's longer form.
    sa.Column("traceparent", sa.String(128), nullable=True),
    sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
)

# The relay's query, "pending rows by id", stays fast however many published rows remain.
sa.Index(
    "ix_outbox_pending",
    outbox.c.id,
    postgresql_where=outbox.c.published_at.is_(None),
    sqlite_where=outbox.c.published_at.is_(None),
)
# The retention sweep deletes by publication time, batch after batch, each a range scan of
# this index from where the last batch ended.
sa.Index("ix_outbox_published_at", outbox.c.published_at)


def _create_users_and_outbox(connection: Connection) -> None:
    # checkfirst: two processes starting at once on SQLite may both get here; the loser's
    # version insert fails and apply_migrations reads the version again.
    metadata.create_all(connection, tables=[users, outbox], checkfirst=True)


def _add_outbox_claims(connection: Connection) -> None:
    _add_missing_outbox_columns(connection, (outbox.c.claim_token, outbox.c.claimed_until))


def _add_outbox_traceparent(connection: Connection) -> None:
    _add_missing_outbox_columns(connection, (outbox.c.traceparent,))


def _add_missing_outbox_columns(
    connection: Connection, columns: tuple[sa.Column[Any], ...]
) -> None:
    # Step 1 builds `outbox` from the definition above, so a database created since a later
    # step exists already has its columns; only one created before it lacks them. Nullable
    # columns only: the rows already there get NULL.
    present = {column["name"] for column in sa.inspect(connection).get_columns(outbox.name)}
    for column in columns:
        if column.name not in present:
            column_type = column.type.compile(dialect=connection.dialect)
            connection.exec_driver_sql(
                f"ALTER TABLE {outbox.name} ADD COLUMN {column.name} {column_type}"
            )


MIGRATIONS: Final[tuple[Migration, ...]] = (
    _create_users_and_outbox,
    _add_outbox_claims,
    _add_outbox_traceparent,
)


def upgrade(engine: Engine) -> int:
    """Bring the schema up to date; returns the version in place."""
    return apply_migrations(engine, COMPONENT, MIGRATIONS)
