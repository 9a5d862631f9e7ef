"""`simulate`'s publishing: each registration wakes a relay of its own, which publishes the event at
once; whatever it cannot publish stays pending and unclaimed, for any relay. In-memory fakes."""

from __future__ import annotations

import threading

from producer_service.registration import RegisterUser
from producer_service.relay import OutboxRelay, PublisherFactory, relaying_meanwhile
from producer_service.settings import RelaySettings
from producer_service.simulate import Simulation
from shared.amqp import BrokerUnavailable
from tests.support.producer_fakes import FakeOutbox, FakePublisher
from tests.support.waiting import wait_until

# An hour between polls: only a commit can make this relay publish within a test.
SETTINGS = RelaySettings(batch_size=10, poll_interval_s=3600, retention_s=3600, confirm_timeout_s=5)


def _woken_relay(
    outbox: FakeOutbox, connect: PublisherFactory
) -> tuple[OutboxRelay, threading.Event]:
    commits = threading.Event()
    return OutboxRelay(outbox, connect, SETTINGS, commits=commits), commits


def _simulate(outbox: FakeOutbox, commits: threading.Event, count: int) -> tuple[int, int]:
    register = RegisterUser(outbox, routing_key="user.registered")
    summary = Simulation(register, outbox.count_published, settle_s=5, commits=commits).run(count)
    return summary.registered, summary.published


def _unreachable() -> FakePublisher:
    raise BrokerUnavailable("cannot connect to amqp://guest:***@localhost:1/: refused")


def test_a_simulation_publishes_each_event_after_its_commit_in_order_and_marks_it() -> None:
    outbox, publisher = FakeOutbox(), FakePublisher()
    relay, commits = _woken_relay(outbox, lambda: publisher)

    with relaying_meanwhile(relay):
        assert _simulate(outbox, commits, 7) == (7, 7)

    assert publisher.sent == [1, 2, 3, 4, 5, 6, 7]
    assert outbox.pending() == []
    assert outbox.claimed_ids() == []
    assert not publisher.is_open  # closed when the block ended


def test_a_commit_wakes_the_relay_between_its_polls() -> None:
    outbox, publisher = FakeOutbox(), FakePublisher()
    relay, commits = _woken_relay(outbox, lambda: publisher)
    register = RegisterUser(outbox, routing_key="user.registered")

    with relaying_meanwhile(relay):
        wait_until(lambda: "claim" in outbox.journal, what="the relay's first pass")
        for number in (1, 2):
            register(f"user{number}", f"user{number}@example.com")
            commits.set()
            wait_until(lambda: outbox.pending() == [], what="the event published")

    assert publisher.sent == [1, 2]


def test_an_unreachable_broker_leaves_every_event_pending_and_unclaimed() -> None:
    outbox = FakeOutbox()
    relay, commits = _woken_relay(outbox, _unreachable)

    with relaying_meanwhile(relay):
        registered, published = _simulate_without_waiting(outbox, commits, 3)

    assert (registered, published) == (3, 0)
    assert outbox.pending() == [1, 2, 3]
    assert outbox.claimed_ids() == []  # a relay need not wait for a lease


def test_publishing_goes_on_after_the_broker_connection_is_lost() -> None:
    outbox = FakeOutbox()
    connects: list[FakePublisher] = []

    def connect() -> FakePublisher:
        # The first connection drops after one event; the next one works.
        connects.append(FakePublisher(lose_connection_after=1 if not connects else None))
        return connects[-1]

    relay, commits = _woken_relay(outbox, connect)
    with relaying_meanwhile(relay):
        assert _simulate(outbox, commits, 4) == (4, 4)

    assert len(connects) == 2
    assert outbox.pending() == []


def test_if_the_relay_thread_fails_the_events_stay_pending_and_unclaimed() -> None:
    outbox = FakeOutbox()

    def broken() -> FakePublisher:
        raise RuntimeError("a bug, not an outage")

    relay, commits = _woken_relay(outbox, broken)
    with relaying_meanwhile(relay):
        registered, published = _simulate_without_waiting(outbox, commits, 2)

    assert (registered, published) == (2, 0)
    assert outbox.pending() == [1, 2]
    assert outbox.claimed_ids() == []


def _simulate_without_waiting(
    outbox: FakeOutbox, commits: threading.Event, count: int
) -> tuple[int, int]:
    register = RegisterUser(outbox, routing_key="user.registered")
    simulation = Simulation(register, outbox.count_published, settle_s=0, commits=commits)
    summary = simulation.run(count)
    return summary.registered, summary.published
