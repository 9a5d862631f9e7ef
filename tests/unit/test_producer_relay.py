"""The relay's core logic, with in-memory fakes for storage and broker."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from producer_service.ports import (
    DatabaseUnavailable,
    OutboxMessage,
    PublishInFlight,
    PublishOutcome,
)
from producer_service.relay import OutboxRelay, idle_pause_s
from producer_service.settings import RelaySettings
from shared.backoff import doubled
from shared.errors import TransientError
from tests.support.producer_fakes import FakeBatch, FakeInFlight, FakeOutbox, FakePublisher

SETTINGS = RelaySettings(batch_size=3, poll_interval_s=0.01, retention_s=3600, confirm_timeout_s=5)


def test_pending_events_are_published_in_id_order_in_batches_and_marked() -> None:
    outbox, publisher = FakeOutbox(7), FakePublisher()

    totals = OutboxRelay(outbox, lambda: publisher, SETTINGS).run_once()

    assert publisher.sent == [1, 2, 3, 4, 5, 6, 7]
    assert outbox.pending() == []
    assert (totals.published, totals.failed) == (7, 0)


def test_a_returned_event_stays_pending_without_holding_back_the_rest() -> None:
    outbox, publisher = FakeOutbox(5), FakePublisher(unroutable={2})
    relay = OutboxRelay(outbox, lambda: publisher, SETTINGS)

    assert relay.publish_pending(publisher) == (4, 1)

    assert outbox.pending() == [2]
    [returned] = [row for row in outbox.rows if row.message.id == 2]
    assert returned.attempts == 1
    assert returned.last_error is not None
    assert "NO_ROUTE" in returned.last_error
    # The next pass tries it again.
    publisher.unroutable.clear()
    assert relay.publish_pending(publisher) == (1, 0)
    assert outbox.pending() == []


def test_a_lost_connection_keeps_unconfirmed_events_and_asks_for_a_reconnect() -> None:
    outbox, publisher = FakeOutbox(6), FakePublisher(lose_connection_after=4)
    relay = OutboxRelay(outbox, lambda: publisher, SETTINGS)

    with pytest.raises(TransientError):
        relay.publish_pending(publisher)

    assert outbox.pending() == [5, 6]


def test_the_next_batch_is_written_before_the_previous_ones_confirms_are_awaited() -> None:
    outbox, publisher = FakeOutbox(7), FakePublisher()

    OutboxRelay(outbox, lambda: publisher, SETTINGS).run_once()

    assert publisher.calls == [
        ("start", [1, 2, 3]),
        ("start", [4, 5, 6]),
        ("finish", [1, 2, 3]),
        ("start", [7]),
        ("finish", [4, 5, 6]),
        ("finish", [7]),
    ]


def test_nothing_is_marked_when_writing_a_batch_raises() -> None:
    class ExplodingPublisher(FakePublisher):
        def start(self, messages: Sequence[OutboxMessage]) -> FakeInFlight:
            raise RuntimeError("boom")

    outbox = FakeOutbox(2)
    publisher = ExplodingPublisher()

    with pytest.raises(RuntimeError):
        OutboxRelay(outbox, lambda: publisher, SETTINGS).publish_pending(publisher)

    assert outbox.pending() == [1, 2]
    assert outbox.claimed_ids() == []


def test_both_batches_on_the_wire_are_released_when_waiting_raises() -> None:
    class ExplodingPublisher(FakePublisher):
        def finish(self, in_flight: PublishInFlight) -> PublishOutcome:
            raise RuntimeError("boom")

    outbox = FakeOutbox(5)
    publisher = ExplodingPublisher()

    with pytest.raises(RuntimeError):
        OutboxRelay(outbox, lambda: publisher, SETTINGS).publish_pending(publisher)

    assert outbox.pending() == [1, 2, 3, 4, 5]
    assert outbox.claimed_ids() == []


def test_a_database_error_with_a_batch_on_the_wire_releases_it_and_drops_the_connection() -> None:
    class OutboxDownAfterOneClaim(FakeOutbox):
        claims = 0

        def claim(
            self, *, after_id: int, limit: int, event_ids: Sequence[str] | None = None
        ) -> FakeBatch:
            self.claims += 1
            if self.claims > 1:
                raise DatabaseUnavailable("database is locked")
            return super().claim(after_id=after_id, limit=limit)

    outbox, publisher = OutboxDownAfterOneClaim(6), FakePublisher()

    with pytest.raises(DatabaseUnavailable):
        OutboxRelay(outbox, lambda: publisher, SETTINGS).publish_pending(publisher)

    assert publisher.calls == [("start", [1, 2, 3])]
    assert outbox.pending() == [1, 2, 3, 4, 5, 6]
    assert outbox.claimed_ids() == []
    # Its confirms may still come; the next pass publishes these events on a new connection.
    assert not publisher.is_open


def test_nothing_more_is_claimed_once_the_connection_failed_while_writing() -> None:
    outbox, publisher = FakeOutbox(9), FakePublisher(lose_connection_after=4)

    with pytest.raises(TransientError):
        OutboxRelay(outbox, lambda: publisher, SETTINGS).publish_pending(publisher)

    assert [ids for call, ids in publisher.calls if call == "start"] == [[1, 2, 3], [4, 5, 6]]
    assert outbox.pending() == [5, 6, 7, 8, 9]
    never_sent = [row for row in outbox.rows if row.message.id > 6]
    assert [row.attempts for row in never_sent] == [0, 0, 0]


def test_a_pass_over_named_events_publishes_only_those() -> None:
    outbox, publisher = FakeOutbox(3), FakePublisher()

    published = OutboxRelay(outbox, lambda: publisher, SETTINGS).publish_pending(
        publisher, event_ids=["event-2"]
    )

    assert published == (1, 0)
    assert publisher.sent == [2]
    assert outbox.pending() == [1, 3]


def test_run_forever_publishes_until_a_stop_is_requested() -> None:
    outbox, publisher = FakeOutbox(4), FakePublisher()
    stop = threading.Event()
    publisher.on_publish.append(stop)
    relay = OutboxRelay(outbox, lambda: publisher, SETTINGS, stop=stop)

    totals = relay.run_forever()

    assert stop.is_set()
    assert totals.published >= 3  # at least the first batch, then it stopped
    assert not publisher.is_open  # closed on the way out


def test_run_forever_reconnects_after_a_lost_connection() -> None:
    outbox = FakeOutbox(6)
    publishers = [FakePublisher(lose_connection_after=2), FakePublisher()]
    stop = threading.Event()
    publishers[1].on_publish.append(stop)
    connect = iter(publishers).__next__
    relay = OutboxRelay(outbox, connect, RelaySettings(50, 0.01, 3600, 5), stop=stop)

    relay.run_forever()

    assert publishers[0].sent == [1, 2]
    assert publishers[1].sent == [3, 4, 5, 6]
    assert outbox.pending() == []


def test_run_forever_moves_to_a_new_connection_when_the_broker_refuses_a_whole_pass() -> None:
    outbox = FakeOutbox(4)
    publishers = [FakePublisher(refuse_all=True), FakePublisher()]
    stop = threading.Event()
    publishers[1].on_publish.append(stop)
    connect = iter(publishers).__next__
    relay = OutboxRelay(outbox, connect, RelaySettings(50, 0.01, 3600, 5), stop=stop)
    threading.Timer(5, stop.set).start()  # without the reconnect, nothing would ever stop it

    totals = relay.run_forever()

    assert publishers[0].sent == [1, 2, 3, 4]
    assert not publishers[0].is_open
    assert publishers[1].sent == [1, 2, 3, 4]
    assert outbox.pending() == []
    assert (totals.published, totals.refused) == (4, 4)


def test_run_forever_keeps_its_connection_when_the_broker_returns_a_whole_pass() -> None:
    # A return comes from the broker's routing, the same for every channel: no reconnect.
    outbox, publisher = FakeOutbox(2), FakePublisher(unroutable={1, 2})
    stop = threading.Event()
    connections = []

    def connect() -> FakePublisher:
        connections.append(publisher)
        return publisher

    relay = OutboxRelay(outbox, connect, RelaySettings(50, 0.01, 3600, 5), stop=stop)
    threading.Timer(0.3, stop.set).start()

    totals = relay.run_forever()

    assert len(connections) == 1
    assert totals.failed >= 2
    assert totals.refused == 0
    assert outbox.pending() == [1, 2]


def test_the_sweep_deletes_rows_older_than_the_retention() -> None:
    outbox = FakeOutbox(0)
    before = datetime.now(UTC)

    OutboxRelay(outbox, FakePublisher, SETTINGS).sweep()

    [cutoff] = outbox.deleted_before
    assert before - timedelta(seconds=3600) <= cutoff <= datetime.now(UTC) - timedelta(seconds=3600)


def test_the_sweep_counts_every_batch() -> None:
    outbox = FakeOutbox(0)
    outbox.sweep_batches = [1000, 1000, 7]
    relay = OutboxRelay(outbox, FakePublisher, SETTINGS)

    assert relay.sweep() == 2007
    assert relay.totals.deleted == 2007


def test_run_forever_publishes_between_two_sweep_batches() -> None:
    # A long sweep must not stop publishing: one batch per pass, the pending events between.
    class SweepThenStop(FakeOutbox):
        def sweep_published_before(self, cutoff: datetime, batch_size: int) -> Iterator[int]:
            yield from super().sweep_published_before(cutoff, batch_size)
            stop.set()

    outbox, publisher = SweepThenStop(2), FakePublisher()
    outbox.sweep_batches = [1000, 1000, 1000, 3]
    stop = threading.Event()
    relay = OutboxRelay(outbox, lambda: publisher, SETTINGS, stop=stop)

    totals = relay.run_forever()

    assert totals.deleted == 3003
    assert outbox.pending() == []
    sweeps = [index for index, entry in enumerate(outbox.journal) if entry == "sweep"]
    assert len(sweeps) == 4
    for earlier, later in itertools.pairwise(sweeps):
        assert "claim" in outbox.journal[earlier + 1 : later], outbox.journal


def test_run_forever_waits_out_a_database_outage() -> None:
    class FlakyOutbox(FakeOutbox):
        failures = 1

        def claim(
            self, *, after_id: int, limit: int, event_ids: Sequence[str] | None = None
        ) -> FakeBatch:
            if self.failures:
                self.failures -= 1
                raise DatabaseUnavailable("database unavailable (OperationalError)")
            return super().claim(after_id=after_id, limit=limit, event_ids=event_ids)

    outbox, publisher = FlakyOutbox(2), FakePublisher()
    stop = threading.Event()
    publisher.on_publish.append(stop)

    OutboxRelay(outbox, lambda: publisher, SETTINGS, stop=stop).run_forever()

    assert outbox.pending() == []


def test_an_idle_relay_polls_again_soon_then_slows_to_the_interval() -> None:
    pauses = [idle_pause_s(n, poll_interval_s=1.0) for n in range(1, 120)]
    # Right after traffic, for a while: milliseconds, not the whole interval, nor growing.
    assert max(pauses[:50]) < 0.01
    assert pauses == sorted(pauses)
    assert pauses[-1] == 1.0  # a long-idle relay polls at the configured interval


def test_pauses_stay_capped_however_long_the_relay_waits() -> None:
    # A relay idle for hours counts millions of empty passes; 2.0**n overflows past n=1023.
    assert idle_pause_s(10**7, poll_interval_s=1.0) == 1.0
    assert doubled(0.5, 10**7, 30.0) == 30.0
    assert doubled(0.5, 2, 30.0) == 2.0
