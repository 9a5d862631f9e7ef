"""The "maybe sent" states of the processed-events record, on SQLite and PostgreSQL.

After an uncertain send (no reply to the final dot) an event may be sent once more, no sooner
than its wait, and after a second uncertain send never again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from email_consumer.ports import Claim
from email_consumer.processed_events import SqlProcessedEvents


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'processed.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def clocked(database_url: str) -> Iterator[tuple[SqlProcessedEvents, list[float]]]:
    now = [1_000.0]
    opened = SqlProcessedEvents.open(database_url, clock=lambda: now[0])
    yield opened, now
    opened.dispose()


def test_one_resend_after_the_wait_then_sent(
    clocked: tuple[SqlProcessedEvents, list[float]],
) -> None:
    store, now = clocked
    event_id = str(uuid.uuid4())
    assert store.claim(event_id, "a", 60) is Claim.CLAIMED
    assert store.mark_uncertain(event_id, "a", resend_after_s=300) is False
    now[0] += 299
    assert store.claim(event_id, "b", 60) is Claim.HELD_ELSEWHERE, "never resent at once"
    now[0] += 1
    assert store.claim(event_id, "c", 60) is Claim.RESEND
    assert store.claim(event_id, "d", 60) is Claim.HELD_ELSEWHERE, "one resend at a time"
    store.mark_sent(event_id, "c")
    assert store.claim(event_id, "e", 60) is Claim.ALREADY_SENT
    assert store.is_sent(event_id)


def test_a_second_uncertain_send_is_final(clocked: tuple[SqlProcessedEvents, list[float]]) -> None:
    store, now = clocked
    event_id = str(uuid.uuid4())
    store.claim(event_id, "a", 60)
    store.mark_uncertain(event_id, "a", resend_after_s=0)
    assert store.claim(event_id, "b", 60) is Claim.RESEND
    assert store.mark_uncertain(event_id, "b", resend_after_s=0) is True
    now[0] += 10**6
    assert store.claim(event_id, "c", 60) is Claim.MAYBE_SENT
    assert not store.is_sent(event_id)


def test_a_resend_whose_worker_died_is_final(
    clocked: tuple[SqlProcessedEvents, list[float]],
) -> None:
    # The dead worker may have delivered the second copy: a takeover could send a third.
    store, now = clocked
    event_id = str(uuid.uuid4())
    store.claim(event_id, "a", 60)
    store.mark_uncertain(event_id, "a", resend_after_s=0)
    assert store.claim(event_id, "crashed", 60) is Claim.RESEND
    now[0] += 59
    assert store.claim(event_id, "b", 60) is Claim.HELD_ELSEWHERE
    now[0] += 2
    assert store.claim(event_id, "b", 60) is Claim.MAYBE_SENT


def test_a_released_resend_keeps_its_one_resend(
    clocked: tuple[SqlProcessedEvents, list[float]],
) -> None:
    store, _ = clocked
    event_id = str(uuid.uuid4())
    store.claim(event_id, "a", 60)
    store.mark_uncertain(event_id, "a", resend_after_s=0)
    assert store.claim(event_id, "b", 60) is Claim.RESEND
    store.release_resend(event_id, "not-b")  # not the holder: no effect
    assert store.claim(event_id, "c", 60) is Claim.HELD_ELSEWHERE
    store.release_resend(event_id, "b")  # failed before the message went out
    assert store.claim(event_id, "c", 60) is Claim.RESEND
    assert store.mark_uncertain(event_id, "c", resend_after_s=0) is True


def test_marking_uncertain_without_the_claim_leaves_no_resend(
    clocked: tuple[SqlProcessedEvents, list[float]],
) -> None:
    store, _ = clocked
    event_id = str(uuid.uuid4())
    store.claim(event_id, "a", 60)
    assert store.mark_uncertain(event_id, "someone-else", resend_after_s=0) is True
    assert store.claim(event_id, "b", 60) is Claim.HELD_ELSEWHERE  # a's claim is untouched
