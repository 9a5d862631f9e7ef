"""Tracing's pure pieces with the SDK's in-memory exporter: which variables turn it on, the W3C
context in AMQP headers, the registration's and the worker's spans, trace ids in log lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pika
import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from email_consumer import failure_headers
from email_consumer.connections import copy_with_headers
from email_consumer.handler import CLAIM_SPAN, SEND_SPAN, WelcomeEmailHandler
from email_consumer.processing import PROCESS_SPAN, DeliveryProcessor
from email_consumer.rendering import WelcomeRenderer
from email_consumer.retry_policy import RetryPolicy
from email_consumer.routing import Ack, Delivery
from email_consumer.settings import parse_mail_from
from producer_service.registration import REGISTRATION_SPAN, RegisterUser
from shared import topology, tracing
from shared.errors import ConfigError
from shared.events import new_user_registered, serialise
from shared.logging import configure_logging, get_logger
from shared.settings import Environment, LoggingSettings, TracingSettings, tracing_settings
from tests.support.consumer_fakes import FakeProcessedEvents, FakeSender, delivery_processor
from tests.support.producer_fakes import FakeRegistrationStore
from tests.support.tracing import context_of, recording_spans

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_SPAN_ID = 0xB7AD6B7169203331


# ---- which variables turn tracing on -----------------------------------------------------------


def test_no_variable_leaves_tracing_off() -> None:
    assert tracing.requested_exporters({}) == []
    assert tracing.requested_exporters({"OTEL_SERVICE_NAME": "svc"}) == []
    assert tracing.requested_exporters({"OTEL_TRACES_EXPORTER": "none"}) == []
    disabled = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}
    assert tracing.requested_exporters(disabled) == []


def test_without_a_variable_the_set_up_configures_nothing() -> None:
    settings = tracing_settings(Environment({"OTEL_TRACES_EXPORTER": " ", "LOG_LEVEL": "INFO"}))
    assert settings.variables == {}
    assert tracing.configure_tracing(settings, service="test") is False
    assert not tracing.is_enabled()
    with tracing.traced(tracing.get_tracer("test"), "nothing") as span:
        assert span is None


@pytest.mark.parametrize(
    ("environment", "exporters"),
    [
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        # OTLP defaults to HTTP/protobuf, the exporter installed (the SDK alone would pick gRPC).
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp_proto_http"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp_proto_http"]),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            ["otlp_proto_http"],
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp_proto_http", "console"]),
    ],
)
def test_the_standard_variables_name_the_exporters(
    environment: dict[str, str], exporters: list[str]
) -> None:
    assert tracing.requested_exporters(environment) == exporters


def test_an_exporter_that_is_not_installed_is_a_configuration_error() -> None:
    grpc = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert tracing.requested_exporters(grpc) == ["otlp_proto_grpc"]
    with pytest.raises(ConfigError, match="otlp_proto_grpc"):
        tracing.configure_tracing(TracingSettings(grpc), service="test")
    assert not tracing.is_enabled()


def test_an_unknown_protocol_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="carrier-pigeon"):
        tracing.requested_exporters(
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}
        )


# ---- propagation -------------------------------------------------------------------------------


def test_the_trace_context_goes_into_headers_and_back() -> None:
    context = tracing.context_of(TRACEPARENT)
    headers: dict[str, object] = {"schema_version": 1}
    tracing.inject(headers, context)
    assert headers[tracing.TRACEPARENT] == TRACEPARENT
    extracted = trace.get_current_span(tracing.extract(headers)).get_span_context()
    assert (extracted.trace_id, extracted.span_id) == (TRACE_ID, PARENT_SPAN_ID)
    assert extracted.is_remote


def test_a_header_pika_hands_over_as_bytes_is_read_too() -> None:
    headers = {tracing.TRACEPARENT: TRACEPARENT.encode()}
    assert tracing.traceparent_in(headers) == TRACEPARENT
    assert trace.get_current_span(tracing.extract(headers)).get_span_context().trace_id == TRACE_ID


def test_missing_or_malformed_context_starts_nothing() -> None:
    for headers in (None, {}, {tracing.TRACEPARENT: "not a traceparent"}, {"traceparent": 7}):
        context = trace.get_current_span(tracing.extract(headers)).get_span_context()
        assert not context.is_valid
    assert tracing.current_traceparent() is None


def test_retry_dead_letter_and_replay_copies_keep_the_traceparent() -> None:
    headers = {tracing.TRACEPARENT: TRACEPARENT, "schema_version": 1}
    failed = failure_headers.after_failure(
        headers,
        error=RuntimeError("smtp down"),
        attempts=1,
        now=datetime.now(UTC),
        host="worker-1",
        routing_key=topology.ROUTING_KEY,
        dead_letter_reason="retries-exhausted",
    )
    assert failed[tracing.TRACEPARENT] == TRACEPARENT
    assert failure_headers.for_replay(failed)[tracing.TRACEPARENT] == TRACEPARENT
    copy = copy_with_headers(pika.BasicProperties(message_id="e1"), failed)
    assert copy.headers[tracing.TRACEPARENT] == TRACEPARENT


# ---- the registration's span -------------------------------------------------------------------


def test_the_registration_span_is_stored_with_its_event() -> None:
    store = FakeRegistrationStore()
    with recording_spans() as exporter:
        registration = RegisterUser(store, routing_key=topology.ROUTING_KEY)(
            "alice", "alice@example.com"
        )
    [span] = exporter.get_finished_spans()
    [message] = store.messages
    assert span.name == REGISTRATION_SPAN
    assert span.attributes is not None
    assert span.attributes["messaging.message.id"] == registration.event_id
    context = context_of(span)
    flags = int(context.trace_flags)
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
    assert message.traceparent == registration.traceparent == expected


def test_with_tracing_off_no_traceparent_is_stored() -> None:
    store = FakeRegistrationStore()
    RegisterUser(store, routing_key=topology.ROUTING_KEY)("alice", "alice@example.com")
    [message] = store.messages
    assert message.traceparent is None


# ---- the worker's spans ------------------------------------------------------------------------


def _processor(sender: FakeSender) -> DeliveryProcessor:
    handler = WelcomeEmailHandler(
        renderer=WelcomeRenderer(parse_mail_from("welcome@example.com")),
        sender=sender,
        processed=FakeProcessedEvents(),
        policy=RetryPolicy(attempts=1, initial_backoff_s=0.0, max_backoff_s=0.0),
        claim_lease_s=60,
    )
    return delivery_processor(handler.handle, broker_delays_s=(5,))


def _delivery(headers: dict[str, object]) -> tuple[Delivery, str]:
    event = new_user_registered(
        user_id="0b6f3c52-2f5e-4b35-8d0e-8f2b7f0b7b1a",
        username="alice",
        email="alice@example.com",
        full_name=None,
    )
    properties = pika.BasicProperties(
        message_id=event.event_id, correlation_id="corr-1", headers=headers
    )
    return Delivery(7, topology.ROUTING_KEY, properties, serialise(event), 0.0), event.event_id


def test_a_delivery_is_a_consumer_span_of_the_publish_with_claim_and_send_as_children(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(LoggingSettings(level="INFO", format="json"), service="test")
    sender = FakeSender()
    delivery, event_id = _delivery({"schema_version": 1, tracing.TRACEPARENT: TRACEPARENT})
    with recording_spans() as exporter:
        action = _processor(sender).process(delivery)
    assert isinstance(action, Ack)
    assert len(sender.sent) == 1
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {PROCESS_SPAN, CLAIM_SPAN, SEND_SPAN}
    process = spans[PROCESS_SPAN]
    assert process.kind is SpanKind.CONSUMER
    assert process.parent is not None
    assert (process.parent.trace_id, process.parent.span_id) == (TRACE_ID, PARENT_SPAN_ID)
    assert process.attributes == {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": topology.QUEUE,
        "messaging.rabbitmq.destination.routing_key": topology.ROUTING_KEY,
        "messaging.message.id": event_id,
        "messaging.rabbitmq.message.delivery_tag": 7,
        "messaging.message.conversation_id": "corr-1",
        "email_consumer.outcome": "Done",
        "email_consumer.action": "Ack",
    }
    for child in (spans[CLAIM_SPAN], spans[SEND_SPAN]):
        assert child.parent is not None
        assert child.parent.span_id == context_of(process).span_id
    assert spans[SEND_SPAN].kind is SpanKind.CLIENT

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    [sent] = [line for line in lines if line["event"] == "welcome email sent"]
    assert sent["trace_id"] == f"{TRACE_ID:032x}"
    assert sent["span_id"] == f"{context_of(process).span_id:016x}"


def test_a_delivery_without_a_trace_context_starts_a_trace_of_its_own() -> None:
    delivery, _ = _delivery({"schema_version": 1})
    with recording_spans() as exporter:
        _processor(FakeSender()).process(delivery)
    [process] = [span for span in exporter.get_finished_spans() if span.name == PROCESS_SPAN]
    assert process.parent is None


def test_log_lines_outside_a_span_name_no_trace(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(level="INFO", format="json"), service="test")
    with tracing.within(TRACEPARENT):  # tracing off: nothing is attached
        get_logger("test").info("no trace")
    [line] = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    assert "trace_id" not in line
    with recording_spans(), tracing.within(TRACEPARENT):
        get_logger("test").info("a stored trace")
    [line] = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    assert line["trace_id"] == f"{TRACE_ID:032x}"
