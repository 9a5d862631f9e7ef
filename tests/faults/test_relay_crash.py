"""The relay SIGKILLed after publishing a batch and before marking it published.

With tracing on (the services export to an OTLP/HTTP receiver the test starts), the relay that
takes over publishes each event in the trace its registration stored with the outbox row.
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from email_consumer.processing import PROCESS_SPAN
from producer_service.publisher import PUBLISH_SPAN
from producer_service.registration import REGISTRATION_SPAN
from shared import topology
from tests.faults.harness import (
    DELIVERY_TIMEOUT_S,
    TEST_TIMEOUT_S,
    Stack,
    account,
    queue_depth,
    record,
    scaled,
)
from tests.support.tracing import OtlpReceiver, otlp_receiver

pytestmark = [pytest.mark.private_node, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT_S)]


def _marked(stack: Stack) -> int:
    engine = sa.create_engine(stack.producer_database)
    try:
        with engine.connect() as connection:
            query = sa.text("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
            return int(connection.execute(query).scalar_one())
    finally:
        engine.dispose()


def test_relay_killed_between_publish_and_mark_loses_nothing_and_sends_no_duplicate(
    stack: Stack,
) -> None:
    with otlp_receiver() as receiver:
        _kill_relays_then_deliver(stack, receiver)


def _kill_relays_then_deliver(stack: Stack, receiver: OtlpReceiver) -> None:
    tracing = receiver.environment()
    count = scaled(1500, 10000)
    kills = scaled(2, 5)
    # One big batch: its publications reach the queue well before its marks are committed.
    batch_size = str(count)
    # Stored only: every event is the relay's to publish.
    simulation = stack.run(
        "producer-service", "simulate", "--count", str(count), "--relay-only", **tracing
    )
    assert simulation.returncode == 0
    committed = stack.committed_event_ids()

    for _kill in range(kills):
        relay = stack.start_relay(RELAY_BATCH_SIZE=batch_size, **tracing)
        # Kill at the first sign of publishing beyond what is marked: the moment the queue
        # holds more events than the outbox says it published.
        deadline = time.monotonic() + 120
        while queue_depth(stack.node.amqp_url, topology.QUEUE) <= _marked(stack):
            assert relay.running, relay.output()[-2000:]
            assert time.monotonic() < deadline, "the relay published nothing in 120 s"
        relay.kill()
        assert queue_depth(stack.node.amqp_url, topology.QUEUE) > _marked(stack)

    # A last relay publishes what is left, once the dead relays' claims have expired (their
    # lease is derived from RELAY_CONFIRM_TIMEOUT_S).
    killed = time.monotonic()
    relay = stack.start_relay(RELAY_BATCH_SIZE=batch_size, **tracing)
    stack.wait_for(lambda: _marked(stack) == count, DELIVERY_TIMEOUT_S, "every event marked")
    republished_after_s = time.monotonic() - killed
    assert relay.terminate() == 0
    published = queue_depth(stack.node.amqp_url, topology.QUEUE)
    republished = published - count
    assert republished > 0, "the fault was not injected: nothing was published twice"

    stack.start_worker(**tracing)
    took = stack.wait_until_delivered(committed)
    stack.settle()
    result = account(committed, stack.emails_by_event())
    record(
        "relay SIGKILLed between publish and mark",
        {
            **result.summary(),
            "kills": kills,
            "events_published_twice": republished,
            "seconds_from_last_kill_to_all_marked": round(republished_after_s, 1),
            "seconds_to_deliver": round(took, 1),
        },
    )
    assert result.lost == []
    assert result.unexpected == []
    # Every republished event reached the worker, and the worker sent none of them twice.
    assert result.duplicated == 0
    _assert_each_event_kept_its_registration_trace(stack, receiver, committed)


def _assert_each_event_kept_its_registration_trace(
    stack: Stack, receiver: OtlpReceiver, committed: list[str]
) -> None:
    registrations = {
        span.attributes["messaging.message.id"]: span for span in receiver.spans(REGISTRATION_SPAN)
    }
    assert set(registrations) == set(committed)
    # The last relay's publishes were exported (the killed relays' spans died with them): each
    # is a child of the span of its event's registration, stored with the outbox row.
    publishes = receiver.spans(PUBLISH_SPAN)
    assert publishes, "the relays exported no publish span"
    for publish in publishes:
        registration = registrations[publish.attributes["messaging.message.id"]]
        assert (publish.trace_id, publish.parent_span_id) == (
            registration.trace_id,
            registration.span_id,
        )

    # Every delivery, of a copy the killed relays published too, stayed in its event's trace.
    def processed_in_trace() -> set[str]:
        return {
            span.attributes["messaging.message.id"]
            for span in receiver.spans(PROCESS_SPAN)
            if span.trace_id == registrations[span.attributes["messaging.message.id"]].trace_id
        }

    stack.wait_for(
        lambda: processed_in_trace() == set(committed), 60, "a processing span in each trace"
    )
