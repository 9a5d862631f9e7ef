"""The trace context through the outbox and the publisher: stored with the registration (SQLite
and PostgreSQL, upgraded databases too), continued by the PRODUCER span of each publish, sent
in the `traceparent` header (real broker, the SDK's in-memory exporter)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from opentelemetry.trace import SpanKind, StatusCode

from producer_service.ports import OutboxMessage
from producer_service.publisher import PUBLISH_SPAN, ConfirmingPublisher
from producer_service.registration import RegisterUser
from producer_service.schema import COMPONENT, MIGRATIONS, outbox, upgrade
from producer_service.storage import SqlOutboxStore, SqlRegistrationStore
from shared.database import apply_migrations, create_database_engine
from shared.settings import Environment, broker_settings
from shared.topology import EXCHANGE, ROUTING_KEY
from shared.tracing import TRACEPARENT
from tests.support.producer import drain_queue
from tests.support.tracing import attributes_of, context_of, recording_spans

STORED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
STORED_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
STORED_SPAN_ID = 0xB7AD6B7169203331


@pytest.fixture(name="engine")
def engine_fixture(database_url: str) -> Iterator[sa.Engine]:
    engine = create_database_engine(database_url)
    yield engine
    engine.dispose()


@pytest.mark.postgres
def test_the_registrations_traceparent_is_stored_and_claimed_with_its_event(
    engine: sa.Engine,
) -> None:
    upgrade(engine)
    register = RegisterUser(SqlRegistrationStore(engine), routing_key=ROUTING_KEY)
    with recording_spans():
        traced = register("alice", "alice@example.com")
    untraced = register("bob", "bob@example.com")
    assert traced.traceparent is not None
    assert untraced.traceparent is None

    with SqlOutboxStore(engine, lease_s=30).claim_pending(after_id=0, limit=10) as batch:
        stored = {message.event_id: message.traceparent for message in batch.messages}
    assert stored == {traced.event_id: traced.traceparent, untraced.event_id: None}


@pytest.mark.postgres
def test_an_outbox_from_before_the_traceparent_is_upgraded_and_its_rows_read(
    engine: sa.Engine,
) -> None:
    assert apply_migrations(engine, COMPONENT, MIGRATIONS[:2]) == 2
    # Step 1 builds today's table; without the column it is the table of an older release.
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE outbox DROP COLUMN traceparent")
        connection.execute(
            outbox.insert().values(
                event_id="e-old",
                event_type="user_registered",
                routing_key=ROUTING_KEY,
                payload="{}",
                headers='{"schema_version": 1}',
                correlation_id="c-old",
                created_at=datetime.now(UTC),
            )
        )

    assert upgrade(engine) == len(MIGRATIONS) == 3

    with SqlOutboxStore(engine, lease_s=30).claim_pending(after_id=0, limit=10) as batch:
        [message] = batch.messages
    assert (message.event_id, message.traceparent) == ("e-old", None)


def _message(routing_key: str = ROUTING_KEY, traceparent: str | None = STORED) -> OutboxMessage:
    event_id = str(uuid.uuid4())
    return OutboxMessage(
        event_id=event_id,
        event_type="user_registered",
        routing_key=routing_key,
        body=b'{"event_id": "%s"}' % event_id.encode(),
        correlation_id="corr-1",
        created_at=datetime.now(UTC),
        headers={"schema_version": 1},
        traceparent=traceparent,
    )


@pytest.fixture
def publisher(amqp_url: str) -> Iterator[ConfirmingPublisher]:
    settings = broker_settings(Environment({"AMQP_URL": amqp_url}))
    publisher = ConfirmingPublisher.connect(settings, confirm_timeout_s=30)
    yield publisher
    publisher.close()


@pytest.mark.broker
def test_each_publish_is_a_producer_span_continuing_the_stored_trace(
    amqp_url: str, publisher: ConfirmingPublisher
) -> None:
    routed, unroutable, untraced = (
        _message(),
        _message("nobody.listens"),
        _message(traceparent=None),
    )
    with recording_spans() as exporter:
        outcome = publisher.publish([routed, unroutable, untraced])
    assert outcome.published == {routed.event_id, untraced.event_id}

    spans = {
        attributes_of(span)["messaging.message.id"]: span for span in exporter.get_finished_spans()
    }
    assert set(spans) == {routed.event_id, unroutable.event_id, untraced.event_id}
    for span in spans.values():
        assert span.name == PUBLISH_SPAN
        assert span.kind is SpanKind.PRODUCER
        assert span.attributes is not None
        assert span.attributes["messaging.system"] == "rabbitmq"
        assert span.attributes["messaging.destination.name"] == EXCHANGE
        assert span.attributes["messaging.operation.type"] == "send"
    published = spans[routed.event_id]
    assert published.parent is not None
    assert (published.parent.trace_id, published.parent.span_id) == (
        STORED_TRACE_ID,
        STORED_SPAN_ID,
    )
    assert published.attributes is not None
    assert published.attributes["messaging.rabbitmq.destination.routing_key"] == ROUTING_KEY
    assert published.status.status_code is StatusCode.UNSET
    assert spans[unroutable.event_id].status.status_code is StatusCode.ERROR
    assert spans[untraced.event_id].parent is None  # a trace of its own

    received = {message.properties.message_id: message for message in drain_queue(amqp_url)}
    context = context_of(published)
    header = received[routed.event_id].properties.headers[TRACEPARENT]
    assert header == f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
    assert received[routed.event_id].properties.headers["schema_version"] == 1


@pytest.mark.broker
def test_with_tracing_off_the_stored_traceparent_is_passed_on_as_it_is(
    amqp_url: str, publisher: ConfirmingPublisher
) -> None:
    traced, untraced = _message(), _message(traceparent=None)
    outcome = publisher.publish([traced, untraced])
    assert outcome.published == {traced.event_id, untraced.event_id}
    received = {message.properties.message_id: message for message in drain_queue(amqp_url)}
    assert received[traced.event_id].properties.headers[TRACEPARENT] == STORED
    assert TRACEPARENT not in received[untraced.event_id].properties.headers
