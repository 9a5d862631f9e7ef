"""The processed-events record on SQLite and PostgreSQL: atomic claims, leases, sharing.

Leases run by the database's clock. A lease "runs out" by moving its end back in the table, as
the passing of that much time would; a worker's clock that is wrong changes nothing.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from email_consumer.ports import ClaimAnswer
from email_consumer.processed_events import SqlProcessedEvents, processed_events
from tests.support.leases import pass_time_on_leases
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import dead_letters, new_event, publish_event, running_worker

HOUR_S = 3600.0


@pytest.fixture
def store(database_url: str) -> Iterator[SqlProcessedEvents]:
    opened = SqlProcessedEvents.open(database_url)
    yield opened
    opened.dispose()


def test_claim_send_and_duplicate(store: SqlProcessedEvents) -> None:
    event_id = str(uuid.uuid4())
    assert store.claim(event_id, "a", 60) is ClaimAnswer.CLAIMED
    assert store.claim(event_id, "b", 60) is ClaimAnswer.HELD_ELSEWHERE
    store.mark_sent(event_id, "a")
    assert store.claim(event_id, "c", 60) is ClaimAnswer.ALREADY_SENT
    assert store.is_sent(event_id)


def test_a_released_claim_is_free_at_once(store: SqlProcessedEvents) -> None:
    event_id = str(uuid.uuid4())
    assert store.claim(event_id, "a", 60) is ClaimAnswer.CLAIMED
    store.release(event_id, "b")  # not the holder: no effect
    assert store.claim(event_id, "c", 60) is ClaimAnswer.HELD_ELSEWHERE
    store.release(event_id, "a")
    assert store.claim(event_id, "c", 60) is ClaimAnswer.CLAIMED
    assert not store.is_sent(event_id)


def test_an_expired_lease_can_be_taken_over(store: SqlProcessedEvents) -> None:
    event_id = str(uuid.uuid4())
    assert store.claim(event_id, "crashed-worker", HOUR_S) is ClaimAnswer.CLAIMED
    pass_time_on_leases(store, HOUR_S - 100)
    assert store.claim(event_id, "b", HOUR_S) is ClaimAnswer.HELD_ELSEWHERE
    pass_time_on_leases(store, 200)
    assert store.claim(event_id, "b", HOUR_S) is ClaimAnswer.CLAIMED
    assert store.claim(event_id, "c", HOUR_S) is ClaimAnswer.HELD_ELSEWHERE


def test_a_worker_whose_clock_runs_ahead_takes_over_no_live_claim(
    store: SqlProcessedEvents,
) -> None:
    ahead = SqlProcessedEvents(store._engine, clock=lambda: time.time() + HOUR_S)
    event_id = str(uuid.uuid4())
    assert store.claim(event_id, "a", 60) is ClaimAnswer.CLAIMED
    # By its clock the lease ended 59 minutes ago; by the database's it has a minute left.
    assert ahead.claim(event_id, "b", 60) is ClaimAnswer.HELD_ELSEWHERE


def test_a_claim_by_a_worker_whose_clock_runs_behind_is_not_taken_over(
    store: SqlProcessedEvents,
) -> None:
    behind = SqlProcessedEvents(store._engine, clock=lambda: time.time() - HOUR_S)
    event_id = str(uuid.uuid4())
    assert behind.claim(event_id, "a", 60) is ClaimAnswer.CLAIMED
    # Its lease, were it counted by its own clock, would have ended 59 minutes ago.
    assert store.claim(event_id, "b", 60) is ClaimAnswer.HELD_ELSEWHERE


def test_opening_twice_keeps_the_record(database_url: str) -> None:
    event_id = str(uuid.uuid4())
    first = SqlProcessedEvents.open(database_url)
    first.claim(event_id, "a", 60)
    first.mark_sent(event_id, "a")
    first.dispose()
    second = SqlProcessedEvents.open(database_url)
    assert second.claim(event_id, "b", 60) is ClaimAnswer.ALREADY_SENT
    second.dispose()


def test_concurrent_claims_from_separate_workers_have_one_winner(database_url: str) -> None:
    stores = [SqlProcessedEvents.open(database_url) for _ in range(4)]  # one per "worker"
    event_id = str(uuid.uuid4())
    barrier = threading.Barrier(8)
    answers: list[ClaimAnswer] = []
    lock = threading.Lock()

    def claim(index: int) -> None:
        barrier.wait()
        answer = stores[index % 4].claim(event_id, f"token-{index}", 60)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers.count(ClaimAnswer.CLAIMED) == 1
    assert answers.count(ClaimAnswer.HELD_ELSEWHERE) == 7
    for store in stores:
        store.dispose()


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_sharing_postgresql_send_a_republished_event_once(
    amqp_url: str, postgres_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    smtp_server.set_latency(1.0)
    event = new_event()
    for _ in range(3):
        publish_event(amqp_url, event)
    env = smtp_server.environment()
    with (
        running_worker(amqp_url, env, tmp_path / "a", CONSUMER_DATABASE_URL=postgres_url) as a,
        running_worker(amqp_url, env, tmp_path / "b", CONSUMER_DATABASE_URL=postgres_url) as b,
    ):
        smtp_server.wait_for(1)
        wait_until(
            lambda: (a.log() + b.log()).count("email already sent for this event") == 2,
            what="both other copies to be recognised as duplicates",
        )
    assert [m.message["X-Event-ID"] for m in smtp_server.messages] == [event.event_id]
    assert dead_letters(amqp_url) == []


def test_records_older_than_the_retention_are_deleted(database_url: str) -> None:
    now = [1_000_000.0]
    store = SqlProcessedEvents.open(database_url, clock=lambda: now[0])
    try:
        old_sent, old_claim, recent_sent, live_claim = (str(uuid.uuid4()) for _ in range(4))
        store.claim(old_sent, "a", 60)
        store.mark_sent(old_sent, "a")  # sent at 1_000_000
        store.claim(old_claim, "b", 60)  # a dead worker's claim
        with store._engine.begin() as connection:  # leases run by the database's clock
            connection.execute(
                processed_events.update()
                .where(processed_events.c.event_id == old_claim)
                .values(lease_until=1_000_060.0)
            )
        now[0] = 1_000_500.0
        store.claim(recent_sent, "c", 60)
        store.mark_sent(recent_sent, "c")  # sent at 1_000_500
        now[0] = 1_001_000.0
        store.claim(live_claim, "d", 600)  # held right now
        assert store.forget_older_than(700) == 2  # cutoff 1_000_300
        assert store.claim(old_sent, "e", 60) is ClaimAnswer.CLAIMED, "forgotten, so claimable"
        assert store.claim(old_claim, "f", 60) is ClaimAnswer.CLAIMED
        assert store.claim(recent_sent, "g", 60) is ClaimAnswer.ALREADY_SENT
        assert store.claim(live_claim, "h", 60) is ClaimAnswer.HELD_ELSEWHERE
    finally:
        store.dispose()


def test_a_store_shared_by_many_threads_keeps_a_fixed_pool_instead_of_logging_in_again(
    postgres_url: str,
) -> None:
    # The worker runs 2 x WORKER_CONCURRENCY threads (32 by default) on one store, opened with
    # WORKER_CONCURRENCY connections. With SQLAlchemy's default pool (5 kept, 10 more opened and
    # closed as bursts come) this test opened 204 connections, and a worker sending 3,000
    # emails 1,522 PostgreSQL sessions.
    threads, connections, rounds = 32, 16, 20
    opened: list[object] = []

    def count(dbapi_connection: object, _record: object) -> None:
        opened.append(dbapi_connection)

    store = SqlProcessedEvents.open(postgres_url, connections=connections)
    sa.event.listen(sa.engine.Engine, "connect", count)
    start = threading.Barrier(threads)
    try:

        def work() -> None:
            for _ in range(rounds):
                # In bursts, as deliveries come: the worker's threads claim together, then
                # send for a while with no connection checked out.
                start.wait()
                event_id = str(uuid.uuid4())
                assert store.claim(event_id, "t", 60) is ClaimAnswer.CLAIMED
                store.mark_sent(event_id, "t")

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
    finally:
        sa.event.remove(sa.engine.Engine, "connect", count)
        store.dispose()
    assert not any(worker.is_alive() for worker in workers)
    # Each of the pool's connections opened once, whatever the bursts (the migrations' one
    # may be among them).
    assert len(opened) <= connections, f"{len(opened)} connections for a pool of {connections}"
