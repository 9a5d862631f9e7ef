"""Every SQLite connection the services open commits durably (`synchronous=FULL` in WAL mode),
but the outbox relay's, whose claims and marks a power cut may undo (`relax_commits`).

With NORMAL, WAL mode syncs the log only at checkpoints, and a commit (a registration `register`
confirmed, the worker's "sent" mark) can roll back after a power cut. A power cut cannot be
staged here; what can be checked is the setting on every connection, read through the services'
own wiring, on several connections at once (each new pooled connection is configured alone).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa

from email_consumer.processed_events import SqlProcessedEvents
from producer_service.bootstrap import bootstrap
from shared.settings import Environment
from tests.support.producer import producer_env

NORMAL = 1
FULL = 2
WAL = "wal"


def _pragmas(engine: sa.Engine, connections: int = 3) -> list[tuple[int, str]]:
    # Pooled connections as the services get them ("connect" hook run), read straight on the
    # driver: through SQLAlchemy each would begin a transaction, and take the write lock.
    opened = [engine.raw_connection() for _ in range(connections)]
    try:
        return [_pragmas_of(connection.driver_connection) for connection in opened]
    finally:
        for connection in opened:
            connection.close()


def _pragmas_of(connection: sqlite3.Connection | None) -> tuple[int, str]:
    assert connection is not None
    synchronous = connection.execute("PRAGMA synchronous").fetchone()[0]
    journal_mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    return synchronous, journal_mode


def test_the_producers_connections_commit_durably(tmp_path: Path) -> None:
    # The broker is never contacted: bootstrap only opens the database.
    env = producer_env("amqp://guest:guest@127.0.0.1:5672/", f"sqlite:///{tmp_path}/p.sqlite3")
    producer = bootstrap(Environment(env))
    try:
        registrations, outbox = producer.engines
        assert _pragmas(registrations) == [(FULL, WAL)] * 3
        # Losing a claim leaves its row pending; losing a mark publishes an event again.
        assert _pragmas(outbox) == [(NORMAL, WAL)] * 3
    finally:
        producer.close()


def test_the_workers_connections_commit_durably(tmp_path: Path) -> None:
    store = SqlProcessedEvents.open(f"sqlite:///{tmp_path}/processed.sqlite3")
    try:
        store.claim("2f0c6c1e-5b8e-4d2e-9a49-7b1c2c9d0a11", "a", 60)  # its shared connection too
        assert _pragmas(store._engine) == [(FULL, WAL)] * 3
    finally:
        store.dispose()
