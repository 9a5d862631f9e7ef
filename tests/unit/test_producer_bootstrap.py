"""The composition root wired with in-memory stores and a fake broker: the use cases it builds
work together, and no database is opened."""

from __future__ import annotations

import threading

from producer_service.bootstrap import bootstrap
from producer_service.relay import relaying_meanwhile
from shared.settings import Environment
from tests.support.producer_fakes import FakeOutbox, FakePublisher

ENV = {"AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}


def test_bootstrap_wires_fakes_into_registration_and_relay() -> None:
    outbox, publisher = FakeOutbox(), FakePublisher()
    producer = bootstrap(Environment(ENV), stores=(outbox, outbox), connect=lambda: publisher)
    try:
        registration = producer.register("alice", "alice@example.com")
        totals = producer.relay().run_once()
    finally:
        producer.close()

    assert producer.engine is None
    assert [user.username for user in outbox.users] == ["alice"]
    assert totals.published == 1
    assert outbox.count_published([registration.event_id]) == 1
    assert publisher.sent == [1]


def test_a_simulation_from_bootstrap_wakes_the_relay_from_bootstrap_at_each_commit() -> None:
    outbox, publisher = FakeOutbox(), FakePublisher()
    producer = bootstrap(Environment(ENV), stores=(outbox, outbox), connect=lambda: publisher)
    commits = threading.Event()

    with relaying_meanwhile(producer.relay(commits=commits)):
        summary = producer.simulation(commits=commits).run(3)

    assert (summary.registered, summary.published) == (3, 3)
    assert publisher.sent == [1, 2, 3]
