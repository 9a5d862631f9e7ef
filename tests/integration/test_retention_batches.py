"""Retention runs in bounded batches, each its own transaction, and writers get in between.

A sweep that deleted everything eligible in one transaction held SQLite's only write lock
(and the worker's process-wide lock) for seconds per million rows, and every registration and
every email waited for all of it. Real SQLite files and a real PostgreSQL database; the
batches are counted by the engine's commit events, and a registration (a claim) is committed
in the middle of a run, from another thread, which on SQLite could not happen while a batch's
transaction were still open.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from email_consumer.ports import ClaimAnswer
from email_consumer.processed_events import (
    COMPONENT as CONSUMER_COMPONENT,
)
from email_consumer.processed_events import (
    MIGRATIONS as CONSUMER_MIGRATIONS,
)
from email_consumer.processed_events import (
    SqlProcessedEvents,
    processed_events,
)
from producer_service.ports import NewUser, OutboxMessage
from producer_service.schema import outbox, upgrade
from producer_service.storage import SqlOutboxStore, SqlRegistrationStore
from shared.database import apply_migrations, create_database_engine
from shared.topology import ROUTING_KEY
from tests.support.leases import pass_time_on_leases

pytestmark = [pytest.mark.postgres]
NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=2)
CUTOFF = NOW - timedelta(days=1)


@pytest.fixture(name="engine")
def engine_fixture(database_url: str) -> Iterator[sa.Engine]:
    engine = create_database_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _store_events(engine: sa.Engine, count: int, published_at: datetime | None) -> None:
    with engine.begin() as connection:
        connection.execute(
            outbox.insert(),
            [
                {
                    "event_id": str(uuid.uuid4()),
                    "event_type": "user_registered",
                    "routing_key": ROUTING_KEY,
                    "payload": "{}",
                    "headers": "{}",
                    "correlation_id": str(uuid.uuid4()),
                    "created_at": OLD,
                    "published_at": published_at,
                }
                for _ in range(count)
            ],
        )


def _register(engine: sa.Engine, username: str) -> None:
    user = NewUser(
        user_id=str(uuid.uuid4()),
        username=username,
        email=f"{username}@example.com",
        full_name=None,
        created_at=datetime.now(UTC),
    )
    message = OutboxMessage(
        event_id=str(uuid.uuid4()),
        event_type="user_registered",
        routing_key=ROUTING_KEY,
        body=b"{}",
        correlation_id=str(uuid.uuid4()),
        created_at=user.created_at,
        headers={},
    )
    SqlRegistrationStore(engine).add_user_with_event(user, message)


def _in_another_thread(work: Callable[[], object]) -> None:
    """Run `work` in a thread and wait for it: a lock still held by the caller's thread
    would keep it waiting (SQLite's busy timeout, the worker's Python lock), never pass."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            failures.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the writer is still waiting: a retention batch holds the lock"
    assert not failures, failures


def _count_commits(engine: sa.Engine) -> list[int]:
    commits: list[int] = []
    sa.event.listen(engine, "commit", lambda _connection: commits.append(1))
    return commits


def _outbox_published(engine: sa.Engine) -> list[datetime | None]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(outbox.c.published_at)).scalars())


def test_the_outbox_sweep_deletes_in_batches_each_committed(engine: sa.Engine) -> None:
    _store_events(engine, 25, published_at=OLD)
    _store_events(engine, 2, published_at=NOW)  # published, but recently: kept
    _store_events(engine, 1, published_at=None)  # pending: never deleted
    commits = _count_commits(engine)

    counts = list(SqlOutboxStore(engine, lease_s=30).sweep_published_before(CUTOFF, 10))

    assert counts == [10, 10, 5]
    assert len(commits) == 3, "one transaction per batch"
    kept = _outbox_published(engine)
    assert len(kept) == 3
    assert sum(published is None for published in kept) == 1


def test_a_registration_commits_while_the_sweep_is_in_progress(engine: sa.Engine) -> None:
    _store_events(engine, 30, published_at=OLD)
    sweep = SqlOutboxStore(engine, lease_s=30).sweep_published_before(CUTOFF, 10)

    assert next(sweep) == 10
    # Between two batches nothing is held: another thread's registration commits at once.
    _in_another_thread(lambda: _register(engine, "between_batches"))
    assert list(sweep) == [10, 10]

    kept = _outbox_published(engine)
    assert kept == [None], "only the registration's pending event is left"


def test_rows_with_one_publication_time_are_swept_across_batches(engine: sa.Engine) -> None:
    # A relay marks a whole batch with one timestamp: the batches must go on within it,
    # neither skipping rows nor deleting more than a batch at once.
    _store_events(engine, 23, published_at=OLD)

    counts = list(SqlOutboxStore(engine, lease_s=30).sweep_published_before(CUTOFF, 5))

    assert counts == [5, 5, 5, 5, 3]
    assert _outbox_published(engine) == []


def test_the_sqlite_sweep_finds_its_rows_by_a_range_scan(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'plan.sqlite3'}")
    upgrade(engine)
    try:
        with engine.connect() as connection:
            plan = " ".join(
                str(row[-1])
                for row in connection.exec_driver_sql(
                    "EXPLAIN QUERY PLAN SELECT published_at, id FROM outbox"
                    " WHERE published_at < ? AND published_at >= ?"
                    " ORDER BY published_at LIMIT 10",
                    ("2030-01-01", "2020-01-01"),
                )
            )
    finally:
        engine.dispose()
    assert "USING COVERING INDEX ix_outbox_published_at" in plan, plan
    assert "SCAN outbox" not in plan, plan
    assert "TEMP B-TREE" not in plan, plan


# ---- the worker's processed events -----------------------------------------------------------


def _processed_store(
    database_url: str, clock: Callable[[], float], sleep: Callable[[float], None]
) -> SqlProcessedEvents:
    engine = create_database_engine(database_url)
    apply_migrations(engine, CONSUMER_COMPONENT, CONSUMER_MIGRATIONS)
    return SqlProcessedEvents(engine, clock, sleep)


def test_forgetting_processed_events_runs_in_batches(database_url: str) -> None:
    now = [1_000_000.0]
    store = _processed_store(database_url, lambda: now[0], lambda _seconds: None)
    try:
        for number in range(23):
            store.claim(f"sent-{number:02}", "t", 60)
            store.mark_sent(f"sent-{number:02}", "t")
        for number in range(7):
            store.claim(f"dead-{number}", "t", 60)  # a dead worker's claims
        now[0] += 10_000
        pass_time_on_leases(store, 10_000)  # leases run by the database's clock
        store.claim("live", "t", 60_000)
        commits = _count_commits(store._engine)

        assert store.forget_older_than(1000, batch_size=5) == 30

        # 23 sent records in five batches, 7 expired claims in two.
        assert len(commits) == 7
        assert store.claim("sent-00", "u", 60) is ClaimAnswer.CLAIMED
        assert store.claim("live", "u", 60) is ClaimAnswer.HELD_ELSEWHERE
    finally:
        store.dispose()


def test_a_claim_commits_while_forgetting_is_in_progress(database_url: str) -> None:
    now = [1_000_000.0]
    paused: list[ClaimAnswer] = []
    store: SqlProcessedEvents

    def claim_meanwhile(_seconds: float) -> None:
        # The pause between two batches: the lock every claim takes must be free here.
        _in_another_thread(lambda: paused.append(store.claim(f"new-{len(paused)}", "n", 60)))

    store = _processed_store(database_url, lambda: now[0], claim_meanwhile)
    try:
        for number in range(12):
            store.claim(f"old-{number}", "t", 60)
            store.mark_sent(f"old-{number}", "t")
        now[0] += 10_000

        assert store.forget_older_than(1000, batch_size=5) == 12
        assert paused == [ClaimAnswer.CLAIMED] * 3, "a claim between each two batches"
        assert store.is_sent("old-11") is False
    finally:
        store.dispose()


def test_an_existing_processed_events_table_gets_the_retention_indexes(
    database_url: str,
) -> None:
    engine = create_database_engine(database_url)
    try:
        apply_migrations(engine, CONSUMER_COMPONENT, CONSUMER_MIGRATIONS[:1])
        with engine.begin() as connection:  # the table as the previous version made it
            for index in ("ix_processed_events_sent_at", "ix_processed_events_lease_until"):
                connection.exec_driver_sql(f"DROP INDEX {index}")
        SqlProcessedEvents.open(database_url).dispose()
        indexes = {index["name"] for index in sa.inspect(engine).get_indexes(processed_events.name)}
    finally:
        engine.dispose()
    assert {"ix_processed_events_sent_at", "ix_processed_events_lease_until"} <= indexes


def test_the_sqlite_retention_finds_its_records_by_range_scans(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'processed.sqlite3'}"
    SqlProcessedEvents.open(url).dispose()
    engine = create_database_engine(url)
    try:
        with engine.connect() as connection:
            plans = [
                " ".join(
                    str(row[-1])
                    for row in connection.exec_driver_sql(
                        "EXPLAIN QUERY PLAN " + query, (status, 5.0, 1.0)
                    )
                )
                for query, status in (
                    (
                        "SELECT sent_at, event_id FROM processed_events WHERE status = ?"
                        " AND sent_at < ? AND sent_at >= ? ORDER BY sent_at LIMIT 10",
                        "sent",
                    ),
                    (
                        "SELECT lease_until, event_id FROM processed_events WHERE status = ?"
                        " AND lease_until < ? AND lease_until >= ? ORDER BY lease_until LIMIT 10",
                        "claimed",
                    ),
                )
            ]
    finally:
        engine.dispose()
    sent_plan, claims_plan = plans
    assert "USING INDEX ix_processed_events_sent_at" in sent_plan, sent_plan
    assert "USING INDEX ix_processed_events_lease_until" in claims_plan, claims_plan


def test_forgetting_stops_after_the_batch_in_progress_once_disposed(database_url: str) -> None:
    # A worker told to stop disposes of its store; a long retention on a pool thread must not
    # keep the process alive to the end (it would go on reopening connections).
    now = [1_000_000.0]
    store: SqlProcessedEvents

    def stop_meanwhile(_seconds: float) -> None:
        store.dispose()

    store = _processed_store(database_url, lambda: now[0], stop_meanwhile)
    for number in range(12):
        store.claim(f"old-{number}", "t", 60)
        store.mark_sent(f"old-{number}", "t")
    now[0] += 10_000

    assert store.forget_older_than(1000, batch_size=5) == 5
    reopened = _processed_store(database_url, lambda: now[0], lambda _seconds: None)
    try:
        assert reopened.forget_older_than(1000, batch_size=5) == 7, "the rest, next time"
    finally:
        reopened.dispose()
