"""From a handling result to the settlement: the breaker, parking, uncertain sends, metrics.

The handler is faked (its result is the input here); the broker path is covered by
tests/integration/test_worker_uncertain_smtp.py.
"""

from __future__ import annotations

import threading

import pika

from email_consumer import failure_headers
from email_consumer.breaker import DeadLetterBreaker
from email_consumer.errors import SmtpRejected, SmtpSenderRefused, UncertainDelivery
from email_consumer.handler import HandlingResult, Outcome
from email_consumer.metrics import WorkerMetrics
from email_consumer.retry_policy import RetryPolicy
from email_consumer.settings import WorkerSettings
from email_consumer.worker import Worker, _Ack, _Action, _Forward
from shared import topology
from shared.events import UserRegistered, new_user_registered
from shared.settings import BrokerSettings


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


def _worker(handler: FakeHandler, metrics: WorkerMetrics, breaker: DeadLetterBreaker) -> Worker:
    return Worker(
        broker=BrokerSettings("amqp://guest:guest@localhost/%2F", 30, 60, None, None, None),
        settings=WorkerSettings(
            concurrency=1,
            prefetch=1,
            shutdown_timeout_s=1,
            claim_lease_s=900,
            reconnect_max_delay_s=1,
            processed_retention_s=3600,
            uncertain_resend_after_s=30,
            breaker_threshold=2,
            breaker_probe_s=30,
        ),
        policy=RetryPolicy(broker_delays_s=(5, 30, 300)),
        handler=handler,  # type: ignore[arg-type]
        metrics=metrics,
        stopping=threading.Event(),
        breaker=breaker,
    )


def _event(number: int = 0) -> UserRegistered:
    return new_user_registered(
        user_id="0b6f3c52-2f5e-4b35-8d0e-8f2b7f0b7b1a",
        username=f"user{number}",
        email=f"user{number}@example.com",
        full_name=None,
    )


def _handle(worker: Worker, event: UserRegistered, retries_done: int = 0) -> _Action:
    properties = pika.BasicProperties(headers={failure_headers.RETRY_COUNT: retries_done})
    return worker._handle(event, topology.ROUTING_KEY, properties)


def _sample(metrics: WorkerMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def test_an_uncertain_send_is_parked_for_its_resend_and_counted() -> None:
    metrics = WorkerMetrics()
    error = UncertainDelivery("no reply to the final dot")
    handler = FakeHandler([HandlingResult(Outcome.FAILED, 1, error)])
    breaker = DeadLetterBreaker(threshold=2, probe_interval_s=30)
    action = _handle(_worker(handler, metrics, breaker), _event(), retries_done=3)
    assert isinstance(action, _Forward)
    assert action.routing_key == topology.retry_queue_name(30)  # the shortest >= 30 s
    assert action.headers[failure_headers.RETRY_COUNT] == 3, "no retry used up"
    assert _sample(metrics, "email_consumer_uncertain_sends_total") == 1


def test_a_final_uncertain_send_is_dead_lettered_saying_so() -> None:
    metrics = WorkerMetrics()
    error = UncertainDelivery("no reply to the final dot", final=True)
    handler = FakeHandler([HandlingResult(Outcome.FAILED, 1, error)])
    breaker = DeadLetterBreaker(threshold=2, probe_interval_s=30)
    action = _handle(_worker(handler, metrics, breaker), _event())
    assert isinstance(action, _Forward)
    assert action.routing_key == topology.DEAD_LETTER_QUEUE
    assert action.headers[failure_headers.DEAD_LETTER_REASON] == "uncertain"


def test_a_server_refusal_parks_every_event_and_the_open_breaker_skips_the_handler() -> None:
    metrics, clock = WorkerMetrics(), Clock()
    refused = SmtpSenderRefused(530, "5.7.0 Authentication required", "MAIL FROM")
    handler = FakeHandler(
        [HandlingResult(Outcome.FAILED, 3, refused), HandlingResult(Outcome.SENT, 1)]
    )
    breaker = DeadLetterBreaker(threshold=2, probe_interval_s=30, clock=clock)
    worker = _worker(handler, metrics, breaker)
    first = _handle(worker, _event(1), retries_done=3)  # even with every retry used up
    assert isinstance(first, _Forward)
    assert first.routing_key == topology.retry_queue_name(30)
    assert first.headers[failure_headers.RETRY_COUNT] == 3
    assert _sample(metrics, "email_consumer_smtp_breaker_open") == 1

    parked = _handle(worker, _event(2))
    assert isinstance(parked, _Forward)
    assert parked.headers[failure_headers.ERROR_TYPE] == "DeliveryPaused"
    assert handler.handled == 1, "not tried while the breaker is open"

    clock.now += 30
    assert isinstance(_handle(worker, _event(2)), _Ack)  # the probe is accepted
    assert _sample(metrics, "email_consumer_smtp_breaker_open") == 0


def test_recipient_refusals_dead_letter_until_the_breaker_opens() -> None:
    metrics = WorkerMetrics()
    rejected = SmtpRejected(550, "5.7.1 Relay access denied")
    handler = FakeHandler([HandlingResult(Outcome.FAILED, 1, rejected)] * 2)
    breaker = DeadLetterBreaker(threshold=2, probe_interval_s=30)
    worker = _worker(handler, metrics, breaker)
    first = _handle(worker, _event(1))
    second = _handle(worker, _event(2))
    assert isinstance(first, _Forward)
    assert first.routing_key == topology.DEAD_LETTER_QUEUE
    assert isinstance(second, _Forward)
    assert second.routing_key == topology.retry_queue_name(30)
    assert second.headers[failure_headers.ERROR_TYPE] == "SmtpRejected"
