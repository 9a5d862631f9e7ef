"""The "maybe sent" states of the processed-events record, on SQLite and PostgreSQL.

After an uncertain send (no reply to the final dot) an event may be sent once more, no sooner
than its wait, and after a second uncertain send never again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from email_consumer.ports import ClaimAnswer
from email_consumer.processed_events import SqlProcessedEvents
from tests.support.leases import pass_time_on_leases


@pytest.fixture
def store(database_url: str) -> Iterator[SqlProcessedEvents]:
    opened = SqlProcessedEvents.open(database_url)
    yield opened
    opened.dispose()


def test_one_resend_after_the_wait_then_sent(
    store: SqlProcessedEvents,
) -> None:
    event_id = str(uuid.uuid4())
    assert store.claim(event_id, "a", 60) is ClaimAnswer.CLAIMED
    assert store.mark_uncertain(event_id, "a", resend_after_s=300) is False
    pass_time_on_leases(store, 299)
    assert store.claim(event_id, "b", 60) is ClaimAnswer.HELD_ELSEWHERE, "never resent at once"
    pass_time_on_leases(store, 1)
    assert store.claim(event_id, "c", 60) is ClaimAnswer.RESEND
    assert store.claim(event_id, "d", 60) is ClaimAnswer.HELD_ELSEWHERE, "one resend at a time"
    store.mark_sent(event_id, "c")
    assert store.claim(event_id, "e", 60) is ClaimAnswer.ALREADY_SENT
    assert store.is_sent(event_id)


def test_a_second_uncertain_send_is_final(store: SqlProcessedEvents) -> None:
    event_id = str(uuid.uuid4())
    store.claim(event_id, "a", 60)
    store.mark_uncertain(event_id, "a", resend_after_s=0)
    assert store.claim(event_id, "b", 60) is ClaimAnswer.RESEND
    assert store.mark_uncertain(event_id, "b", resend_after_s=0) is True
    pass_time_on_leases(store, 10**6)
    assert store.claim(event_id, "c", 60) is ClaimAnswer.MAYBE_SENT
    assert not store.is_sent(event_id)


def test_a_resend_whose_worker_died_is_final(
    store: SqlProcessedEvents,
) -> None:
    # The dead worker may have delivered the second copy: a takeover could send a third.
    event_id = str(uuid.uuid4())
    store.claim(event_id, "a", 60)
    store.mark_uncertain(event_id, "a", resend_after_s=0)
    assert store.claim(event_id, "crashed", 60) is ClaimAnswer.RESEND
    pass_time_on_leases(store, 59)
    assert store.claim(event_id, "b", 60) is ClaimAnswer.HELD_ELSEWHERE
    pass_time_on_leases(store, 2)
    assert store.claim(event_id, "b", 60) is ClaimAnswer.MAYBE_SENT


def test_a_released_resend_keeps_its_one_resend(
    store: SqlProcessedEvents,
) -> None:
    event_id = str(uuid.uuid4())
    store.claim(event_id, "a", 60)
    store.mark_uncertain(event_id, "a", resend_after_s=0)
    assert store.claim(event_id, "b", 60) is ClaimAnswer.RESEND
    store.release_resend(event_id, "not-b")  # not the holder: no effect
    assert store.claim(event_id, "c", 60) is ClaimAnswer.HELD_ELSEWHERE
    store.release_resend(event_id, "b")  # failed before the message went out
    assert store.claim(event_id, "c", 60) is ClaimAnswer.RESEND
    assert store.mark_uncertain(event_id, "c", resend_after_s=0) is True


def test_marking_uncertain_without_the_claim_leaves_no_resend(
    store: SqlProcessedEvents,
) -> None:
    event_id = str(uuid.uuid4())
    store.claim(event_id, "a", 60)
    assert store.mark_uncertain(event_id, "someone-else", resend_after_s=0) is True
    assert store.claim(event_id, "b", 60) is ClaimAnswer.HELD_ELSEWHERE  # a's claim is untouched
