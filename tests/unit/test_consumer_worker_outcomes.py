"""From a delivery to its action: reading the event, the breaker, uncertain sends, metrics.

The handler is faked (its result is the input here); the broker path is covered by
tests/integration/test_worker_uncertain_smtp.py.
"""

from __future__ import annotations

import threading

import pika

from email_consumer import failure_headers, wire_properties
from email_consumer.breaker import DeadLetterBreaker
from email_consumer.errors import (
    SmtpRejected,
    SmtpSenderRefused,
    SmtpUnavailable,
    UncertainDelivery,
)
from email_consumer.handler import HandlingResult, Outcome
from email_consumer.metrics import WorkerMetrics
from email_consumer.processing import DeliveryProcessor
from email_consumer.routing import Ack, Action, Delivery, Forward, HandBack
from shared import topology
from shared.events import UserRegistered, new_user_registered, serialise
from tests.support.consumer_fakes import delivery_processor


class FakeHandler:
    def __init__(self, results: list[HandlingResult]) -> None:
        self.results = list(results)
        self.handled = 0

    def handle(self, event: UserRegistered) -> HandlingResult:
        self.handled += 1
        return self.results.pop(0)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _processor(
    handler: FakeHandler,
    metrics: WorkerMetrics,
    breaker: DeadLetterBreaker | None = None,
    stopping: threading.Event | None = None,
) -> DeliveryProcessor:
    return delivery_processor(handler.handle, metrics=metrics, breaker=breaker, stopping=stopping)


def _event(number: int = 0) -> UserRegistered:
    return new_user_registered(
        user_id="0b6f3c52-2f5e-4b35-8d0e-8f2b7f0b7b1a",
        username=f"user{number}",
        email=f"user{number}@example.com",
        full_name=None,
    )


def _handle(processor: DeliveryProcessor, event: UserRegistered, retries_done: int = 0) -> Action:
    return processor.process(_delivery(serialise(event), retries_done))


def _delivery(body: bytes, retries_done: int = 0) -> Delivery:
    properties = pika.BasicProperties(headers={failure_headers.RETRY_COUNT: retries_done})
    return Delivery(1, topology.ROUTING_KEY, properties, body, 0.0)


def _sample(metrics: WorkerMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def test_an_uncertain_send_is_parked_for_its_resend_and_counted() -> None:
    metrics = WorkerMetrics()
    error = UncertainDelivery("no reply to the final dot")
    handler = FakeHandler([HandlingResult(Outcome.FAILED, 1, error)])
    breaker = DeadLetterBreaker(threshold=2, probe_interval_s=30)
    action = _handle(_processor(handler, metrics, breaker), _event(), retries_done=3)
    assert isinstance(action, Forward)
    assert action.routing_key == topology.retry_queue_name(30)  # the shortest >= 30 s
    assert action.headers[failure_headers.RETRY_COUNT] == 3, "no retry used up"
    assert _sample(metrics, "email_consumer_uncertain_sends_total") == 1


def test_a_final_uncertain_send_is_dead_lettered_saying_so() -> None:
    metrics = WorkerMetrics()
    error = UncertainDelivery("no reply to the final dot", final=True)
    handler = FakeHandler([HandlingResult(Outcome.FAILED, 1, error)])
    breaker = DeadLetterBreaker(threshold=2, probe_interval_s=30)
    action = _handle(_processor(handler, metrics, breaker), _event())
    assert isinstance(action, Forward)
    assert action.routing_key == topology.DEAD_LETTER_QUEUE
    assert action.headers[failure_headers.DEAD_LETTER_REASON] == "uncertain"


def test_a_server_refusal_parks_every_event_and_the_open_breaker_skips_the_handler() -> None:
    metrics, clock = WorkerMetrics(), Clock()
    refused = SmtpSenderRefused(530, "5.7.0 Authentication required", "MAIL FROM")
    handler = FakeHandler(
        [HandlingResult(Outcome.FAILED, 3, refused), HandlingResult(Outcome.SENT, 1)]
    )
    breaker = DeadLetterBreaker(threshold=2, probe_interval_s=30, clock=clock)
    processor = _processor(handler, metrics, breaker)
    first = _handle(processor, _event(1), retries_done=3)  # even with every retry used up
    assert isinstance(first, Forward)
    assert first.routing_key == topology.retry_queue_name(30)
    assert first.headers[failure_headers.RETRY_COUNT] == 3
    assert _sample(metrics, "email_consumer_smtp_breaker_open") == 1

    parked = _handle(processor, _event(2))
    assert isinstance(parked, Forward)
    assert parked.headers[failure_headers.ERROR_TYPE] == "DeliveryPaused"
    assert handler.handled == 1, "not tried while the breaker is open"

    clock.now += 30
    assert isinstance(_handle(processor, _event(2)), Ack)  # the probe is accepted
    assert _sample(metrics, "email_consumer_smtp_breaker_open") == 0


def test_recipient_refusals_dead_letter_until_the_breaker_opens() -> None:
    metrics = WorkerMetrics()
    rejected = SmtpRejected(550, "5.7.1 Relay access denied")
    handler = FakeHandler([HandlingResult(Outcome.FAILED, 1, rejected)] * 2)
    breaker = DeadLetterBreaker(threshold=2, probe_interval_s=30)
    processor = _processor(handler, metrics, breaker)
    first = _handle(processor, _event(1))
    second = _handle(processor, _event(2))
    assert isinstance(first, Forward)
    assert first.routing_key == topology.DEAD_LETTER_QUEUE
    assert isinstance(second, Forward)
    assert second.routing_key == topology.retry_queue_name(30)
    assert second.headers[failure_headers.ERROR_TYPE] == "SmtpRejected"


def _counted(metrics: WorkerMetrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value("email_consumer_events_total", {"outcome": outcome})
    return value or 0.0


def test_sent_and_duplicate_events_are_acked_and_counted_with_their_retries() -> None:
    metrics = WorkerMetrics()
    handler = FakeHandler([HandlingResult(Outcome.SENT, 3), HandlingResult(Outcome.DUPLICATE, 1)])
    processor = _processor(handler, metrics)
    assert isinstance(_handle(processor, _event(1)), Ack)
    assert isinstance(_handle(processor, _event(2)), Ack)
    assert [_counted(metrics, name) for name in ("sent", "duplicate", "retried")] == [1, 1, 2]


def test_a_body_that_is_not_the_event_is_dead_lettered_untried() -> None:
    handler = FakeHandler([])
    action = _processor(handler, WorkerMetrics()).process(_delivery(b"not json"))
    assert isinstance(action, Forward)
    assert action.headers[failure_headers.DEAD_LETTER_REASON] == "malformed"
    assert handler.handled == 0


def test_undecodable_headers_are_dead_lettered_untried() -> None:
    handler = FakeHandler([])
    properties = wire_properties.TolerantBasicProperties()
    properties.undecodable = "the header table cannot be decoded (OverflowError)"
    delivery = Delivery(1, topology.ROUTING_KEY, properties, serialise(_event()), 0.0)
    action = _processor(handler, WorkerMetrics()).process(delivery)
    assert isinstance(action, Forward)
    assert action.headers[failure_headers.ERROR_TYPE] == "UndecodableHeaders"
    assert handler.handled == 0


def test_a_transient_failure_while_stopping_is_handed_back() -> None:
    error = SmtpUnavailable("connection reset")
    handler = FakeHandler([HandlingResult(Outcome.FAILED, 2, error)])
    stopping = threading.Event()
    stopping.set()
    processor = _processor(handler, WorkerMetrics(), stopping=stopping)
    assert isinstance(_handle(processor, _event()), HandBack)


def test_a_bug_in_the_handler_still_settles_the_delivery() -> None:
    class Broken(FakeHandler):
        def handle(self, event: UserRegistered) -> HandlingResult:
            raise RuntimeError("a bug")

    processor = _processor(Broken([]), WorkerMetrics())
    action = _handle(processor, _event())
    assert isinstance(action, Forward)
    assert action.routing_key == topology.retry_queue_name(5)
    assert action.headers[failure_headers.ERROR_TYPE] == "RuntimeError"
