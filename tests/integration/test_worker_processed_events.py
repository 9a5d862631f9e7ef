"""The processed-events record on SQLite and PostgreSQL: atomic claims, leases, sharing."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from email_consumer.ports import Claim
from email_consumer.processed_events import SqlProcessedEvents
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import dead_letters, new_event, publish_event, running_worker


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'processed.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[SqlProcessedEvents]:
    opened = SqlProcessedEvents.open(database_url)
    yield opened
    opened.dispose()


def test_claim_send_and_duplicate(store: SqlProcessedEvents) -> None:
    event_id = str(uuid.uuid4())
    assert store.claim(event_id, "a", 60) is Claim.CLAIMED
    assert store.claim(event_id, "b", 60) is Claim.HELD_ELSEWHERE
    store.mark_sent(event_id, "a")
    assert store.claim(event_id, "c", 60) is Claim.ALREADY_SENT
    assert store.is_sent(event_id)


def test_a_released_claim_is_free_at_once(store: SqlProcessedEvents) -> None:
    event_id = str(uuid.uuid4())
    assert store.claim(event_id, "a", 60) is Claim.CLAIMED
    store.release(event_id, "b")  # not the holder: no effect
    assert store.claim(event_id, "c", 60) is Claim.HELD_ELSEWHERE
    store.release(event_id, "a")
    assert store.claim(event_id, "c", 60) is Claim.CLAIMED
    assert not store.is_sent(event_id)


def test_an_expired_lease_can_be_taken_over(database_url: str) -> None:
    now = [1_000.0]
    store = SqlProcessedEvents.open(database_url)
    clocked = SqlProcessedEvents(store._engine, clock=lambda: now[0])
    event_id = str(uuid.uuid4())
    assert clocked.claim(event_id, "crashed-worker", 30) is Claim.CLAIMED
    now[0] += 29
    assert clocked.claim(event_id, "b", 30) is Claim.HELD_ELSEWHERE
    now[0] += 2
    assert clocked.claim(event_id, "b", 30) is Claim.CLAIMED
    assert clocked.claim(event_id, "c", 30) is Claim.HELD_ELSEWHERE
    store.dispose()


def test_opening_twice_keeps_the_record(database_url: str) -> None:
    event_id = str(uuid.uuid4())
    first = SqlProcessedEvents.open(database_url)
    first.claim(event_id, "a", 60)
    first.mark_sent(event_id, "a")
    first.dispose()
    second = SqlProcessedEvents.open(database_url)
    assert second.claim(event_id, "b", 60) is Claim.ALREADY_SENT
    second.dispose()


def test_concurrent_claims_from_separate_workers_have_one_winner(database_url: str) -> None:
    stores = [SqlProcessedEvents.open(database_url) for _ in range(4)]  # one per "worker"
    event_id = str(uuid.uuid4())
    barrier = threading.Barrier(8)
    answers: list[Claim] = []
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
    assert answers.count(Claim.CLAIMED) == 1
    assert answers.count(Claim.HELD_ELSEWHERE) == 7
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
        store.claim(old_claim, "b", 60)  # a dead worker's claim, lease until 1_000_060
        now[0] = 1_000_500.0
        store.claim(recent_sent, "c", 60)
        store.mark_sent(recent_sent, "c")  # sent at 1_000_500
        now[0] = 1_001_000.0
        store.claim(live_claim, "d", 600)  # held right now
        assert store.forget_older_than(700) == 2  # cutoff 1_000_300
        assert store.claim(old_sent, "e", 60) is Claim.CLAIMED, "forgotten, so claimable"
        assert store.claim(old_claim, "f", 60) is Claim.CLAIMED
        assert store.claim(recent_sent, "g", 60) is Claim.ALREADY_SENT
        assert store.claim(live_claim, "h", 60) is Claim.HELD_ELSEWHERE
    finally:
        store.dispose()
