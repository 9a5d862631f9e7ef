"""An event keeps its trace through the worker's retries: a delayed retry through the broker,
a move to the DLQ and `dlq replay` all come back as deliveries whose CONSUMER spans continue
the trace the event was published with (real broker and worker, its real OTLP/HTTP export)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from email_consumer.processing import PROCESS_SPAN
from shared import topology
from shared.events import serialise
from shared.tracing import TRACEPARENT
from tests.support.broker import ready_count
from tests.support.smtp import SmtpTestServer
from tests.support.tracing import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.waiting import wait_until
from tests.support.worker import (
    dead_letters,
    email_consumer_command,
    new_event,
    publish,
    running_worker,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PUBLISH_SPAN_ID = "b7ad6b7169203331"
PUBLISHED_TRACEPARENT = f"00-{TRACE_ID}-{PUBLISH_SPAN_ID}-01"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as started:
        yield started


def _publish_traced(amqp_url: str, name: str) -> str:
    event = new_event(name)
    publish(
        amqp_url,
        serialise(event),
        message_id=event.event_id,
        extra_headers={TRACEPARENT: PUBLISHED_TRACEPARENT},
    )
    return event.event_id


def _deliveries(receiver: OtlpReceiver, count: int) -> list[ReceivedSpan]:
    wait_until(lambda: len(receiver.spans(PROCESS_SPAN)) >= count, what=f"{count} deliveries")
    return receiver.spans(PROCESS_SPAN)


def _outcomes(spans: list[ReceivedSpan]) -> list[str]:
    return sorted(str(span.attributes["email_consumer.outcome"]) for span in spans)


def test_a_delayed_retry_is_another_delivery_of_the_same_trace(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    smtp_server.fail_transiently(1)
    with running_worker(
        amqp_url,
        smtp_server.environment(),
        tmp_path,
        RETRY_ATTEMPTS="1",
        **receiver.environment(),
    ):
        event_id = _publish_traced(amqp_url, "rita")
        smtp_server.wait_for(1)
        deliveries = _deliveries(receiver, 2)

    _assert_a_failed_then_a_done_delivery_in_the_published_trace(deliveries, event_id)


def test_a_dead_letter_and_its_replay_keep_the_trace(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    smtp_server.refuse_permanently()
    with running_worker(amqp_url, smtp_server.environment(), tmp_path, **receiver.environment()):
        event_id = _publish_traced(amqp_url, "dora")
        wait_until(
            lambda: ready_count(amqp_url, topology.DEAD_LETTER_QUEUE) == 1,
            what="the dead letter",
        )
        [dead] = dead_letters(amqp_url)
        assert dead.headers[TRACEPARENT] == PUBLISHED_TRACEPARENT

        smtp_server.refuse_permanently(None)
        replayed = email_consumer_command(amqp_url, "dlq", "replay")
        assert replayed.returncode == 0, replayed.stderr
        smtp_server.wait_for(1)
        deliveries = _deliveries(receiver, 2)

    _assert_a_failed_then_a_done_delivery_in_the_published_trace(deliveries, event_id)


def _assert_a_failed_then_a_done_delivery_in_the_published_trace(
    deliveries: list[ReceivedSpan], event_id: str
) -> None:
    assert len(deliveries) == 2
    for span in deliveries:
        assert (span.trace_id, span.parent_span_id) == (TRACE_ID, PUBLISH_SPAN_ID)
        assert span.attributes["messaging.message.id"] == event_id
    assert _outcomes(deliveries) == ["Done", "Failed"]
