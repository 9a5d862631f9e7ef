"""Databases already holding N rows, for the scale section: bulk-loaded, shaped like real ones.

Every row is what the services themselves would have written: a user and its `user_registered`
event as `register` stores them (the same payload and headers, built by shared.events), the
event published a short while after it was created, and the worker's record of the email
sent. They are dated `age` ago, so a retention shorter than that finds all of them eligible
and the default retentions (a week, a month) none of them.

Loading is the fast path of each database, not the services' own: one transaction of
`executemany` on SQLite, COPY on PostgreSQL. The size of each table is read after it is
loaded, which gives the bytes per stored row (indexes included).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from email_consumer.processed_events import SqlProcessedEvents, processed_events
from producer_service.schema import outbox, upgrade, users
from producer_service.validation import email_key, username_key
from shared.database import create_database_engine, is_sqlite
from shared.events import EVENT_TYPE, SCHEMA_VERSION, new_user_registered, serialise
from shared.ids import uuid7
from shared.topology import ROUTING_KEY

_CHUNK = 10_000
_IDS_SINCE = datetime.now(UTC)
_HEADERS = json.dumps({"schema_version": SCHEMA_VERSION}, separators=(",", ":"))


def load_producer(url: str, rows: int, age: timedelta, tag: str) -> tuple[float, float]:
    """Create the schema and load `rows` users with their published events.

    Returns the bytes per user row and per outbox row.
    """
    engine = create_database_engine(url)
    try:
        upgrade(engine)
        if rows == 0:
            return 0.0, 0.0
        start = database_bytes(engine)
        _load(engine, users, _user_rows(rows, age, tag))
        after_users = database_bytes(engine)
        _load(engine, outbox, _outbox_rows(rows, age, tag))
        after_outbox = database_bytes(engine)
        _analyse(engine)
        return (after_users - start) / rows, (after_outbox - after_users) / rows
    finally:
        engine.dispose()


def load_consumer(url: str, rows: int, age: timedelta) -> float:
    """Create the worker's table and load `rows` records of sent emails; bytes per row."""
    SqlProcessedEvents.open(url).dispose()
    engine = create_database_engine(url)
    try:
        if rows == 0:
            return 0.0
        start = database_bytes(engine)
        sent_at = (datetime.now(UTC) - age).timestamp()
        _load(
            engine,
            processed_events,
            (
                {
                    # The producer's time-ordered event id, of an event sent a moment after.
                    "event_id": _stored_id(age, number, f"event {number}"),
                    "status": "sent",
                    "claim_token": None,
                    "lease_until": None,
                    "sent_at": sent_at + number * 0.001,
                }
                for number in range(rows)
            ),
        )
        grown = database_bytes(engine) - start
        _analyse(engine)
        return grown / rows
    finally:
        engine.dispose()


def database_bytes(engine: Engine) -> int:
    """The database on disk: the SQLite file with its WAL, or PostgreSQL's database size."""
    if is_sqlite(engine):
        database = Path(str(engine.url.database))
        return sum(
            path.stat().st_size for path in (database, Path(f"{database}-wal")) if path.exists()
        )
    with engine.connect() as connection:
        return int(
            connection.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
        )


def url_bytes(url: str) -> int:
    engine = create_database_engine(url)
    try:
        return database_bytes(engine)
    finally:
        engine.dispose()


def _load(engine: Engine, table: sa.Table, rows: Iterator[dict[str, Any]]) -> None:
    if is_sqlite(engine):
        # One transaction for all: SQLite's cost is the commit, not the insert.
        with engine.begin() as connection:
            for chunk in _chunks(rows):
                connection.execute(table.insert(), chunk)
        _truncate_wal(engine)
        return
    columns = [column.name for column in table.columns if column.name != "id"]
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        copy_sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        with cursor.copy(copy_sql) as copy:
            for row in rows:
                copy.write_row([row[name] for name in columns])
        raw.commit()
    finally:
        raw.close()


def _truncate_wal(engine: Engine) -> None:
    # Straight on the driver's connection: a checkpoint cannot run inside the transaction
    # SQLAlchemy would begin (BEGIN IMMEDIATE, shared/database.py).
    raw = engine.raw_connection()
    try:
        raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # type: ignore[union-attr]
    finally:
        raw.close()


def _analyse(engine: Engine) -> None:
    # What a database that grew to this size over months would have: fresh statistics (on
    # PostgreSQL autovacuum's analyse would have run many times by then).
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")


def _chunks(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _moment(age: timedelta, number: int) -> datetime:
    # A millisecond apart, in id order, like registrations arriving one after another.
    return datetime.now(UTC) - age + timedelta(milliseconds=number)


def _stored_id(age: timedelta, number: int, seed: str) -> str:
    # What shared.ids gives the `number`th row, `age` ago. Seeded and timed from one moment of
    # this process, so that the user's row and its event, built apart, carry the same user id.
    moment = _IDS_SINCE - age + timedelta(milliseconds=number)
    seeded = random.Random(seed)
    return str(uuid7(lambda: int(moment.timestamp() * 1e9), seeded.getrandbits))


def _identity(tag: str, number: int) -> tuple[str, str, str | None]:
    username = f"{tag}{number}"
    return username, f"{username}@example.com", f"Stored User {number}" if number % 2 else None


def _user_rows(rows: int, age: timedelta, tag: str) -> Iterator[dict[str, Any]]:
    for number in range(rows):
        username, email, full_name = _identity(tag, number)
        yield {
            "user_id": _stored_id(age, number, username),
            "username": username,
            "username_key": username_key(username),
            "email": email,
            "email_key": email_key(email),
            "full_name": full_name,
            "created_at": _moment(age, number),
        }


def _outbox_rows(rows: int, age: timedelta, tag: str) -> Iterator[dict[str, Any]]:
    for number in range(rows):
        username, email, full_name = _identity(tag, number)
        created = _moment(age, number)
        event = new_user_registered(
            user_id=_stored_id(age, number, username),
            username=username,
            email=email,
            full_name=full_name,
            occurred_at=created,
            event_id=_stored_id(age, number, f"event {username}"),
        )
        yield {
            "event_id": event.event_id,
            "event_type": EVENT_TYPE,
            "routing_key": ROUTING_KEY,
            "payload": serialise(event).decode("utf-8"),
            "headers": _HEADERS,
            "correlation_id": str(uuid.uuid4()),
            "created_at": created,
            "published_at": created + timedelta(milliseconds=50),
            "attempts": 1,
            "last_error": None,
            "claim_token": None,
            "claimed_until": None,
            "traceparent": None,  # stored only with tracing on
        }
