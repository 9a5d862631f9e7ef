"""The outbox's claims: no lock held while the broker confirms, leases that expire by the
database's clock whatever a claimant's clock says, the upgrade.

Real SQLite files and a real PostgreSQL database, the real RabbitMQ; the one stand-in is a
publisher that holds its batch until the test lets it go, to keep a batch "waiting for
confirms" for as long as the test needs. A lease "runs out" by moving its end back in the
table, as the passing of that much time would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
import sqlalchemy as sa

from producer_service.bootstrap import Producer, bootstrap
from producer_service.ports import OutboxMessage, PublishInFlight, PublishOutcome
from producer_service.registration import RegisterUser
from producer_service.relay import OutboxRelay
from producer_service.schema import COMPONENT, MIGRATIONS, outbox, upgrade
from producer_service.settings import RelaySettings
from producer_service.storage import SqlOutboxStore, SqlRegistrationStore
from shared.database import apply_migrations, create_database_engine, db_now
from shared.settings import Environment
from shared.topology import ROUTING_KEY
from tests.support.producer import (
    drain_queue,
    message_ids,
    outbox_rows,
    producer_env,
    run_producer,
)
from tests.support.producer_fakes import FakeInFlight
from tests.support.shifted_clock import LEASE_S, run_shifted

pytestmark = [pytest.mark.broker, pytest.mark.postgres]
SETTINGS = RelaySettings(batch_size=10, poll_interval_s=0.01, retention_s=3600, confirm_timeout_s=5)
HOUR_S = 3600.0


@pytest.fixture(name="engine")
def engine_fixture(database_url: str) -> Iterator[sa.Engine]:
    engine = create_database_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(name="producer")
def producer_fixture(amqp_url: str, database_url: str) -> Iterator[Producer]:
    producer = bootstrap(Environment(producer_env(amqp_url, database_url)))
    yield producer
    producer.close()


def _register(engine: sa.Engine, *names: str) -> list[str]:
    register = RegisterUser(SqlRegistrationStore(engine), routing_key=ROUTING_KEY)
    return [register(name, f"{name}@example.com").event_id for name in names]


def _ids(messages: Sequence[OutboxMessage]) -> list[str]:
    return [message.event_id for message in messages]


def _published(database_url: str) -> list[str]:
    return [row.event_id for row in outbox_rows(database_url) if row.published_at is not None]


def _pass_time_on_claims(engine: sa.Engine, seconds: float) -> None:
    """Move every claim's end `seconds` back: the database's clock moved on that much."""
    with engine.begin() as connection:
        connection.execute(
            outbox.update()
            .where(outbox.c.claimed_until.is_not(None))
            .values(claimed_until=outbox.c.claimed_until - seconds)
        )


def _lease_left_s(engine: sa.Engine, event_id: str) -> float:
    with engine.connect() as connection:
        left = connection.execute(
            sa.select(outbox.c.claimed_until - db_now()).where(outbox.c.event_id == event_id)
        ).scalar_one()
    return float(left)


class HeldPublisher:
    """Confirms every event, but only once the test sets `release`."""

    is_open = True

    def __init__(self) -> None:
        self.waiting = threading.Event()
        self.release = threading.Event()

    def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        return self.finish(self.start(messages))

    def start(self, messages: Sequence[OutboxMessage]) -> FakeInFlight:
        return FakeInFlight(messages, PublishOutcome(frozenset(_ids(messages)), {}))

    def finish(self, in_flight: PublishInFlight) -> PublishOutcome:
        assert isinstance(in_flight, FakeInFlight)
        self.waiting.set()
        assert self.release.wait(60), "the test never released the batch"
        return in_flight.outcome

    def idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def close(self) -> None:
        self.is_open = False


def test_a_registration_commits_while_a_batch_waits_for_its_confirms(
    amqp_url: str, database_url: str, engine: sa.Engine
) -> None:
    waiting = _register(engine, "alice", "bob")
    publisher = HeldPublisher()
    relay = OutboxRelay(SqlOutboxStore(engine, lease_s=HOUR_S), lambda: publisher, SETTINGS)
    relay_pass = threading.Thread(target=relay.publish_pending, args=[publisher])
    relay_pass.start()
    try:
        assert publisher.waiting.wait(30), "the relay never started publishing"

        registered = run_producer(
            "register",
            "carol",
            "carol@example.com",
            "--json",
            env=producer_env(amqp_url, database_url),
        )

        # Done, its own event published, while the relay's batch still waits for its confirms:
        # the relay held no lock a registration needs.
        assert relay_pass.is_alive(), "register waited until the relay's batch had ended"
        assert not publisher.release.is_set()
    finally:
        publisher.release.set()
        relay_pass.join(30)
    assert registered.returncode == 0, registered.stderr
    carol = json.loads(registered.stdout)
    assert carol["published"] is True
    assert sorted(_published(database_url)) == sorted([*waiting, carol["event_id"]])
    assert message_ids(drain_queue(amqp_url)) == [carol["event_id"]]  # the others were held


def test_a_live_claim_is_skipped_by_another_relay(
    amqp_url: str, database_url: str, producer: Producer, engine: sa.Engine
) -> None:
    held, free = _register(engine, "alice", "bob"), _register(engine, "carol")
    other_relay = SqlOutboxStore(engine, lease_s=HOUR_S)

    with other_relay.claim_pending(after_id=0, limit=2) as batch:
        assert _ids(batch.messages) == held
        assert producer.relay().run_once().published == 1
        assert message_ids(drain_queue(amqp_url)) == free
        batch.mark_published(held)

    assert sorted(_published(database_url)) == sorted([*held, *free])


def test_an_expired_claim_is_taken_over_and_published_once_without_being_clobbered(
    amqp_url: str, database_url: str, producer: Producer, engine: sa.Engine
) -> None:
    events = _register(engine, "alice", "bob")
    stalled_relay = SqlOutboxStore(engine, lease_s=HOUR_S)

    with stalled_relay.claim_pending(after_id=0, limit=10) as stalled:
        assert _ids(stalled.messages) == events
        # It died, or stalled, after claiming, and its lease ended an hour ago.
        _pass_time_on_claims(engine, 2 * HOUR_S)
        assert producer.relay().run_once().published == 2
        # Its marks, when it comes back, touch nothing: the rows are someone else's now.
        stalled.mark_failed(dict.fromkeys(events, "no confirm within 10 s"))

    assert message_ids(drain_queue(amqp_url)) == events
    rows = outbox_rows(database_url)
    assert [(row.event_id, row.attempts, row.last_error) for row in rows] == [
        (event_id, 1, None) for event_id in events
    ]
    assert _published(database_url) == events


def test_a_batch_left_by_an_error_or_unmarked_is_claimable_again_at_once(
    engine: sa.Engine,
) -> None:
    events = _register(engine, "alice", "bob", "carol")
    store = SqlOutboxStore(engine, lease_s=HOUR_S)

    with pytest.raises(RuntimeError), store.claim_pending(after_id=0, limit=2):
        raise RuntimeError("the publisher failed unexpectedly")
    with store.claim_pending(after_id=0, limit=10) as batch:
        assert _ids(batch.messages) == events
        batch.mark_published(events[1:])  # the first one neither published nor failed
    with store.claim_pending(after_id=0, limit=10) as batch:
        assert _ids(batch.messages) == events[:1]


def test_a_failed_event_is_released_with_its_error_and_retried(engine: sa.Engine) -> None:
    [event] = _register(engine, "alice")
    store = SqlOutboxStore(engine, lease_s=HOUR_S)

    with store.claim_pending(after_id=0, limit=10) as batch:
        batch.mark_failed({event: "returned by the broker: 312 NO_ROUTE"})

    with engine.connect() as connection:
        row = connection.execute(sa.select(outbox)).one()
    assert (row.attempts, row.last_error) == (1, "returned by the broker: 312 NO_ROUTE")
    assert (row.claim_token, row.claimed_until, row.published_at) == (None, None, None)
    with store.claim_pending(after_id=0, limit=10) as batch:
        assert _ids(batch.messages) == [event]


def test_a_database_from_before_the_claims_is_upgraded_and_its_pending_rows_published(
    amqp_url: str, database_url: str
) -> None:
    engine = create_database_engine(database_url)
    try:
        assert apply_migrations(engine, COMPONENT, MIGRATIONS[:1]) == 1
        # Step 1 builds the outbox from today's definition; without the claim columns it is
        # the table step 1 made before they existed.
        with engine.begin() as connection:
            for column in ("claim_token", "claimed_until"):
                connection.exec_driver_sql(f"ALTER TABLE outbox DROP COLUMN {column}")
        pending = _register(engine, "alice", "bob", "carol")
    finally:
        engine.dispose()

    relay = run_producer("relay", "--once", env=producer_env(amqp_url, database_url))

    assert relay.returncode == 0, relay.stderr
    assert "published 3 events" in relay.stdout
    assert _published(database_url) == pending
    assert message_ids(drain_queue(amqp_url)) == pending
    engine = create_database_engine(database_url)
    try:
        assert upgrade(engine) == len(MIGRATIONS) == 3
    finally:
        engine.dispose()


def test_a_relay_whose_clock_runs_ahead_takes_over_no_live_claim(
    database_url: str, engine: sa.Engine
) -> None:
    events = _register(engine, "alice", "bob")
    store = SqlOutboxStore(engine, lease_s=LEASE_S)

    with store.claim_pending(after_id=0, limit=10) as batch:
        assert _ids(batch.messages) == events
        # Meanwhile a relay on a host whose clock is an hour ahead looks for work: by its clock
        # the lease ended long ago, by the database's it has a minute left.
        assert run_shifted(HOUR_S, "relay-claim", database_url) == []
        batch.mark_published(events)

    assert _published(database_url) == events
