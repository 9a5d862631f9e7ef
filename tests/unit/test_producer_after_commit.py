"""Publishing at commit: pre-claimed events published from a thread, marked in batches, and
everything it cannot publish handed to the relay at once. In-memory fakes for store and broker."""

from __future__ import annotations

import threading
import time

from producer_service.after_commit import PublishAfterCommit
from producer_service.ports import Claim, NewUser, OutboxMessage
from producer_service.registration import RegisterUser
from producer_service.relay import PublisherFactory
from producer_service.simulate import Simulation
from shared.amqp import BrokerUnavailable
from tests.support.producer_fakes import FakeOutbox, FakePublisher, fake_message
from tests.support.waiting import wait_until

LEASE_S = 60.0
CONFIRM_TIMEOUT_S = 5.0


def _after_commit(
    outbox: FakeOutbox, connect: PublisherFactory, **options: float
) -> PublishAfterCommit:
    return PublishAfterCommit(
        outbox,
        connect,
        lease_s=LEASE_S,
        confirm_timeout_s=CONFIRM_TIMEOUT_S,
        batch_size=10,
        **options,  # type: ignore[arg-type]
    )


def _store_and_submit(outbox: FakeOutbox, now: PublishAfterCommit, number: int) -> OutboxMessage:
    claim = now.claim()
    assert claim is not None
    message = outbox.add(fake_message(number), claim)
    now.submit(message, claim)
    return message


def _unreachable() -> FakePublisher:
    raise BrokerUnavailable("cannot connect to amqp://guest:***@localhost:1/: refused")


def test_handed_over_events_are_published_in_order_and_marked() -> None:
    outbox, publisher = FakeOutbox(), FakePublisher()

    with _after_commit(outbox, lambda: publisher) as now:
        for number in range(1, 8):
            _store_and_submit(outbox, now, number)

    assert publisher.sent == [1, 2, 3, 4, 5, 6, 7]
    assert outbox.pending() == []
    assert outbox.claimed_ids() == []
    assert now.published == 7


def test_marks_are_written_in_batches_not_once_per_event() -> None:
    outbox, publisher = FakeOutbox(), FakePublisher()

    with _after_commit(outbox, lambda: publisher, mark_every_s=60.0) as now:
        for number in range(1, 6):
            _store_and_submit(outbox, now, number)
            wait_until(
                lambda: publisher.sent[-1:] == [outbox.rows[-1].message.id], what="a publish"
            )
        # Published, not yet marked: still claimed, so no relay publishes them meanwhile.
        assert outbox.claimed_ids() == [1, 2, 3, 4, 5]

    assert outbox.pending() == []
    assert outbox.mark_writes == 1


def test_an_unreachable_broker_leaves_events_to_the_relay_at_once() -> None:
    outbox = FakeOutbox()

    with _after_commit(outbox, _unreachable, reconnect_after_s=60.0) as now:
        _store_and_submit(outbox, now, 1)
        wait_until(lambda: now.claim() is None, timeout_s=5, what="publishing to pause")
        # From now on events are stored unclaimed: the relay may take them at once.

    assert outbox.pending() == [1]
    assert outbox.claimed_ids() == []  # released, not left to wait for the lease


def test_a_lost_connection_fails_the_rest_of_the_batch_and_releases_it() -> None:
    outbox, publisher = FakeOutbox(), FakePublisher(lose_connection_after=1)
    now = _after_commit(outbox, lambda: publisher, reconnect_after_s=60.0)
    for number in (1, 2, 3):
        _store_and_submit(outbox, now, number)  # handed over before the thread starts: one batch

    with now:
        wait_until(lambda: now.claim() is None, timeout_s=5, what="publishing to pause")

    assert outbox.pending() == [2, 3]
    assert outbox.claimed_ids() == []
    assert [row.attempts for row in outbox.rows] == [1, 1, 1]
    assert outbox.rows[1].last_error == "connection lost"


def test_publishing_resumes_once_the_broker_is_back() -> None:
    outbox = FakeOutbox()
    connects: list[FakePublisher] = []

    def connect() -> FakePublisher:
        # The first connection drops at once; the next one works.
        connects.append(FakePublisher(lose_connection_after=0 if not connects else None))
        return connects[-1]

    with _after_commit(outbox, connect, reconnect_after_s=0.05) as now:
        _store_and_submit(outbox, now, 1)
        # Nothing is handed over while paused; the thread tries the broker again by itself.
        wait_until(lambda: len(connects) == 2, timeout_s=5, what="a second connection")
        wait_until(lambda: now.claim() is not None, timeout_s=5, what="publishing to resume")
        _store_and_submit(outbox, now, 2)

    assert connects[1].sent == [2]
    assert outbox.pending() == [1]  # failed at commit: the relay's


def test_after_a_stop_what_is_still_queued_goes_to_the_relay_unpublished() -> None:
    outbox, publisher, stop = FakeOutbox(), FakePublisher(), threading.Event()
    now = PublishAfterCommit(
        outbox, lambda: publisher, lease_s=LEASE_S, confirm_timeout_s=1, batch_size=10, stop=stop
    )
    for number in (1, 2, 3):
        _store_and_submit(outbox, now, number)
    stop.set()  # SIGTERM before the thread got to them

    with now:
        pass

    assert publisher.sent == []
    assert outbox.pending() == [1, 2, 3]
    assert outbox.claimed_ids() == []


def test_if_the_thread_fails_its_events_go_to_the_relay_and_later_ones_are_stored_unclaimed() -> (
    None
):
    outbox = FakeOutbox()

    def broken() -> FakePublisher:
        raise RuntimeError("a bug, not an outage")

    now = _after_commit(outbox, broken)
    taken_early = now.claim()  # by a registration that commits only after the thread died
    assert taken_early is not None
    with now:
        _store_and_submit(outbox, now, 1)
        wait_until(lambda: now.claim() is None, timeout_s=5, what="publishing to stop")
        now.submit(outbox.add(fake_message(2), taken_early), taken_early)

    assert outbox.pending() == [1, 2]
    assert outbox.claimed_ids() == []


def test_an_event_whose_lease_is_nearly_over_is_released_unpublished() -> None:
    outbox, publisher = FakeOutbox(), FakePublisher()
    short = Claim("token-of-another-process", LEASE_S, time.monotonic() + CONFIRM_TIMEOUT_S)

    with _after_commit(outbox, lambda: publisher) as now:
        claim = Claim(now.claim().token, short.lease_s, short.until)  # type: ignore[union-attr]
        now.submit(outbox.add(fake_message(1), claim), claim)

    assert publisher.sent == []
    assert outbox.pending() == [1]
    assert outbox.claimed_ids() == []


def test_a_simulation_publishes_each_event_after_its_commit() -> None:
    outbox, publisher = FakeOutbox(), FakePublisher()

    class Store:
        def add_user_with_event(
            self, user: NewUser, message: OutboxMessage, claim: Claim | None = None
        ) -> int:
            return outbox.add(message, claim).id

    register = RegisterUser(Store(), routing_key="user.registered")
    with _after_commit(outbox, lambda: publisher) as now:
        simulation = Simulation(register, outbox.count_published, settle_s=5, publish_now=now)
        summary = simulation.run(5)

    assert (summary.registered, summary.published) == (5, 5)
    assert publisher.sent == [1, 2, 3, 4, 5]
