"""The confirming publisher against the real broker: pipelined confirms, returns, failures."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pika
import pytest

from producer_service import publisher as publisher_module
from producer_service.ports import OutboxMessage
from producer_service.publisher import ConfirmingPublisher
from shared.amqp import BrokerUnavailable
from shared.settings import BrokerSettings, Environment, broker_settings
from shared.topology import EXCHANGE, QUEUE, ROUTING_KEY
from tests.support.broker import BrokerAdmin, ready_count
from tests.support.producer import closed_port_url, drain_queue, message_ids

pytestmark = pytest.mark.broker


def _settings(url: str) -> BrokerSettings:
    return broker_settings(Environment({"AMQP_URL": url}))


def _message(routing_key: str = ROUTING_KEY) -> OutboxMessage:
    event_id = str(uuid.uuid4())
    return OutboxMessage(
        event_id=event_id,
        event_type="user_registered",
        routing_key=routing_key,
        body=b'{"event_id": "%s"}' % event_id.encode(),
        correlation_id=str(uuid.uuid4()),
        created_at=datetime.now(UTC),
        headers={"schema_version": 1},
    )


@pytest.fixture
def publisher(amqp_url: str) -> Iterator[ConfirmingPublisher]:
    publisher = ConfirmingPublisher.connect(_settings(amqp_url), confirm_timeout_s=30)
    yield publisher
    publisher.close()


def test_a_returned_message_in_a_pipelined_batch_is_failed_and_the_others_published(
    amqp_url: str, publisher: ConfirmingPublisher
) -> None:
    routed_before, unroutable, routed_after = _message(), _message("nobody.listens"), _message()

    outcome = publisher.publish([routed_before, unroutable, routed_after])

    assert outcome.published == {routed_before.event_id, routed_after.event_id}
    assert set(outcome.failed) == {unroutable.event_id}
    assert "returned by the broker: 312 NO_ROUTE" in outcome.failed[unroutable.event_id]
    assert not outcome.connection_lost
    assert message_ids(drain_queue(amqp_url)) == [routed_before.event_id, routed_after.event_id]


def test_thousands_in_flight_are_all_confirmed_in_order(
    amqp_url: str, publisher: ConfirmingPublisher
) -> None:
    messages = [_message() for _ in range(3000)]

    outcome = publisher.publish(messages)

    assert outcome.failed == {}
    assert outcome.published == {message.event_id for message in messages}
    assert message_ids(drain_queue(amqp_url)) == [message.event_id for message in messages]


def test_two_batches_on_the_wire_are_each_settled_by_their_own_confirms(
    amqp_url: str, publisher: ConfirmingPublisher
) -> None:
    first = [_message() for _ in range(200)]
    unroutable = _message("nobody.listens")
    second = [_message(), unroutable, *(_message() for _ in range(200))]

    first_in_flight = publisher.start(first)
    second_in_flight = publisher.start(second)
    first_outcome = publisher.finish(first_in_flight)
    second_outcome = publisher.finish(second_in_flight)

    assert first_outcome.published == {message.event_id for message in first}
    assert first_outcome.failed == {}
    assert second_outcome.published == {m.event_id for m in second if m is not unroutable}
    assert set(second_outcome.failed) == {unroutable.event_id}
    assert not first_outcome.connection_lost
    assert not second_outcome.connection_lost
    routed = [message.event_id for message in [*first, *second] if message is not unroutable]
    assert message_ids(drain_queue(amqp_url)) == routed


def test_a_body_over_the_frame_size_arrives_whole_between_small_ones(
    amqp_url: str, publisher: ConfirmingPublisher
) -> None:
    # RabbitMQ's frame_max is 128 KiB: this body goes out as three body frames.
    big = dataclasses.replace(_message(), body=json.dumps({"pad": "x" * 300_000}).encode())
    messages = [_message(), big, _message("nobody.listens"), _message()]

    outcome = publisher.publish(messages)

    assert outcome.published == {messages[i].event_id for i in (0, 1, 3)}
    received = drain_queue(amqp_url)
    assert message_ids(received) == [messages[i].event_id for i in (0, 1, 3)]
    assert [r.body for r in received] == [json.loads(messages[i].body) for i in (0, 1, 3)]


def test_on_a_pika_without_batch_writes_each_event_is_published_on_its_own(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publisher_module, "batch_writer", lambda _channel, _exchange: None)
    publisher = ConfirmingPublisher.connect(_settings(amqp_url), confirm_timeout_s=30)
    try:
        routed, unroutable = _message(), _message("nobody.listens")
        outcome = publisher.publish([routed, unroutable, *(more := [_message(), _message()])])
    finally:
        publisher.close()

    assert outcome.published == {routed.event_id, *(m.event_id for m in more)}
    assert "312 NO_ROUTE" in outcome.failed[unroutable.event_id]
    assert message_ids(drain_queue(amqp_url)) == [routed.event_id, *(m.event_id for m in more)]


def test_properties_follow_the_contract(amqp_url: str, publisher: ConfirmingPublisher) -> None:
    message = _message()
    publisher.publish([message])

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        _, properties, _ = connection.channel().basic_get(QUEUE, auto_ack=True)
    finally:
        connection.close()
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    assert properties.message_id == message.event_id
    assert properties.type == "user_registered"
    assert properties.app_id == "producer_service"
    assert properties.timestamp == int(message.created_at.timestamp())
    assert properties.correlation_id == message.correlation_id
    assert properties.headers["schema_version"] == 1


def test_a_connection_closed_by_the_broker_fails_the_batch_and_reports_it(
    amqp_url: str, vhost: str, broker_admin: BrokerAdmin, publisher: ConfirmingPublisher
) -> None:
    assert broker_admin.close_connections(vhost) >= 1
    messages = [_message(), _message()]

    outcome = publisher.publish(messages)

    assert outcome.connection_lost
    assert outcome.published == frozenset()
    assert set(outcome.failed) == {message.event_id for message in messages}
    assert not publisher.is_open
    assert ready_count(amqp_url, QUEUE) == 0


def test_a_closed_connection_fails_every_batch_on_the_wire(
    amqp_url: str, vhost: str, broker_admin: BrokerAdmin, publisher: ConfirmingPublisher
) -> None:
    assert broker_admin.close_connections(vhost) >= 1
    first, second = [_message(), _message()], [_message()]

    first_in_flight, second_in_flight = publisher.start(first), publisher.start(second)
    outcomes = [publisher.finish(first_in_flight), publisher.finish(second_in_flight)]

    for outcome, batch in zip(outcomes, (first, second), strict=True):
        assert outcome.connection_lost
        assert outcome.published == frozenset()
        assert set(outcome.failed) == {message.event_id for message in batch}
    assert not publisher.is_open
    assert ready_count(amqp_url, QUEUE) == 0


def test_an_unreachable_broker_raises_broker_unavailable_without_the_password() -> None:
    url = closed_port_url().replace("guest:guest", "guest:s3cret-pass")

    with pytest.raises(BrokerUnavailable) as failure:
        ConfirmingPublisher.connect(_settings(url), confirm_timeout_s=5)

    assert "s3cret-pass" not in str(failure.value)
    assert "***" in str(failure.value)


def test_without_topology_declaration_the_exchange_must_exist(amqp_url: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    connection.close()
    publisher = ConfirmingPublisher.connect(
        _settings(amqp_url), confirm_timeout_s=30, declare=False
    )
    try:
        outcome = publisher.publish([_message()])
    finally:
        publisher.close()

    # No queue is bound yet: mandatory=True turns silent loss into a failure.
    assert outcome.published == frozenset()
    assert "NO_ROUTE" in next(iter(outcome.failed.values()))
