"""Where each kind of outcome sends a delivery: ack, a retry queue, the DLQ, or back again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pika
import pytest

from email_consumer import failure_headers as fh
from email_consumer.errors import (
    EventBusy,
    SmtpRejected,
    SmtpSenderRefused,
    SmtpUnavailable,
    UncertainDelivery,
)
from email_consumer.retry_policy import RetryPolicy
from email_consumer.routing import (
    Ack,
    Action,
    Crashed,
    Delivery,
    DeliveryOutcome,
    Done,
    Failed,
    Forward,
    HandBack,
    Paused,
    Router,
    Unreadable,
)
from email_consumer.wire_properties import UndecodableHeaders
from shared import topology
from shared.events import InvalidEvent

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DELAYS = (5, 30, 300)
ROUTER = Router(
    policy=RetryPolicy(broker_delays_s=DELAYS),
    host="worker-1",
    breaker_probe_s=30,
    uncertain_resend_after_s=60,
)
TRANSIENT = SmtpUnavailable("connection reset")
REJECTED = SmtpRejected(550, "5.1.1 no such user")
REFUSED = SmtpSenderRefused(530, "5.7.0 Authentication required", "MAIL FROM")


def _delivery(retries_done: int = 0, headers: dict[str, Any] | None = None) -> Delivery:
    table = {fh.RETRY_COUNT: retries_done, **(headers or {})}
    return Delivery(7, topology.ROUTING_KEY, pika.BasicProperties(headers=table), b"{}", 0.0)


def _route(outcome: DeliveryOutcome, retries_done: int = 0, router: Router = ROUTER) -> Action:
    return router.route(_delivery(retries_done), outcome, now=NOW)


def _to_retry_queue(action: Action, delay_s: int) -> Forward:
    assert isinstance(action, Forward)
    assert (action.exchange, action.routing_key) == (
        topology.RETRY_EXCHANGE,
        topology.retry_queue_name(delay_s),
    )
    assert action.counted_as == "delayed"
    return action


def _to_dead_letters(action: Action, reason: str) -> Forward:
    assert isinstance(action, Forward)
    assert (action.exchange, action.routing_key) == (
        topology.DEAD_LETTER_EXCHANGE,
        topology.DEAD_LETTER_QUEUE,
    )
    assert action.counted_as == "dead_lettered"
    assert action.headers[fh.DEAD_LETTER_REASON] == reason
    return action


def test_a_sent_or_duplicate_event_is_acknowledged() -> None:
    assert _route(Done()) == Ack()


@pytest.mark.parametrize(
    "error", [InvalidEvent("not JSON"), UndecodableHeaders("the header table cannot be decoded")]
)
def test_an_unreadable_message_is_dead_lettered_as_malformed(error: Exception) -> None:
    forward = _to_dead_letters(_route(Unreadable(error)), "malformed")
    assert forward.headers[fh.ERROR_TYPE] == type(error).__name__
    assert forward.headers[fh.ATTEMPTS] == 1


def test_an_unreadable_message_without_headers_gets_fresh_ones() -> None:
    properties = pika.BasicProperties(headers=None)
    delivery = Delivery(7, topology.ROUTING_KEY, properties, b"\xff", 0.0)
    action = ROUTER.route(delivery, Unreadable(UndecodableHeaders("bad table")), now=NOW)
    forward = _to_dead_letters(action, "malformed")
    assert forward.headers[fh.RETRY_COUNT] == 0


@pytest.mark.parametrize(("retries_done", "delay_s"), [(0, 5), (1, 30), (2, 300)])
def test_a_transient_failure_walks_through_the_retry_queues(
    retries_done: int, delay_s: int
) -> None:
    forward = _to_retry_queue(_route(Failed(TRANSIENT, 4), retries_done), delay_s)
    assert forward.headers[fh.RETRY_COUNT] == retries_done + 1
    assert forward.headers[fh.ATTEMPTS] == 4
    assert forward.headers[fh.ERROR_TYPE] == "SmtpUnavailable"


def test_the_copy_says_where_when_and_by_whom() -> None:
    forward = _to_retry_queue(_route(Failed(TRANSIENT, 1)), 5)
    assert forward.headers[fh.WORKER_HOST] == "worker-1"
    assert forward.headers[fh.ORIGINAL_ROUTING_KEY] == topology.ROUTING_KEY
    assert forward.headers[fh.LAST_FAILURE_AT] == NOW.isoformat()


def test_retry_queues_exhausted_means_the_dlq() -> None:
    _to_dead_letters(_route(Failed(TRANSIENT, 4), retries_done=3), "retries-exhausted")


def test_a_permanent_failure_is_dead_lettered_at_once_even_when_stopping() -> None:
    failed = Failed(REJECTED, 1, permanent=True, stopping=True)
    forward = _to_dead_letters(_route(failed), "permanent")
    assert forward.headers[fh.SMTP_CODE] == 550


@pytest.mark.parametrize("error", [TRANSIENT, EventBusy("held by another delivery")])
def test_a_transient_failure_while_stopping_is_handed_back(error: Exception) -> None:
    assert _route(Failed(error, 2, stopping=True), retries_done=3) == HandBack()


def test_a_busy_event_waits_without_using_up_a_retry() -> None:
    forward = _to_retry_queue(_route(Failed(EventBusy("held"), 4), retries_done=3), 5)
    assert forward.headers[fh.RETRY_COUNT] == 3


def test_an_uncertain_send_waits_for_its_one_resend_even_when_stopping() -> None:
    failed = Failed(UncertainDelivery("no reply to the final dot"), 1, stopping=True)
    forward = _to_retry_queue(_route(failed, retries_done=3), 300)  # the shortest >= 60 s
    assert forward.headers[fh.RETRY_COUNT] == 3, "no retry used up"


def test_an_uncertain_resend_is_dead_lettered_saying_so() -> None:
    failed = Failed(UncertainDelivery("no reply to the final dot", final=True), 1)
    _to_dead_letters(_route(failed), "uncertain")


@pytest.mark.parametrize("stopping", [False, True])
def test_a_server_refusal_parks_for_the_breaker_probe_whatever_the_retries(
    stopping: bool,
) -> None:
    forward = _to_retry_queue(_route(Failed(REFUSED, 3, stopping=stopping), retries_done=3), 30)
    assert forward.headers[fh.RETRY_COUNT] == 3


def test_a_recipient_refusal_parks_only_while_the_breaker_is_open() -> None:
    _to_dead_letters(_route(Failed(REJECTED, 1, permanent=True)), "permanent")
    parked = Failed(REJECTED, 1, permanent=True, breaker_open=True)
    forward = _to_retry_queue(_route(parked, retries_done=1), 30)
    assert forward.headers[fh.RETRY_COUNT] == 1


def test_an_event_paused_by_the_breaker_waits_untried() -> None:
    forward = _to_retry_queue(_route(Paused(), retries_done=2), 30)
    assert forward.headers[fh.ERROR_TYPE] == "DeliveryPaused"
    assert forward.headers[fh.ATTEMPTS] == 0
    assert forward.headers[fh.RETRY_COUNT] == 2


def test_without_retry_queues_waiting_becomes_the_dlq() -> None:
    router = Router(RetryPolicy(broker_delays_s=()), "worker-1", 30, 60)
    _to_dead_letters(_route(Paused(), router=router), "retries-exhausted")
    _to_dead_letters(_route(Failed(TRANSIENT, 1), router=router), "retries-exhausted")
    uncertain = Failed(UncertainDelivery("no reply"), 1)
    _to_dead_letters(_route(uncertain, router=router), "uncertain")


def test_a_crash_of_the_worker_goes_through_the_retry_queues_then_the_dlq() -> None:
    crash = Crashed(RuntimeError("a bug"))
    forward = _to_retry_queue(_route(crash), 5)
    assert forward.headers[fh.ERROR_TYPE] == "RuntimeError"
    _to_dead_letters(_route(crash, retries_done=3), "retries-exhausted")


def test_delivery_log_id_is_printable_and_short() -> None:
    properties = pika.BasicProperties(message_id="evt\n" + "x" * 100)
    delivery = Delivery(1, topology.ROUTING_KEY, properties, b"", 0.0)
    assert delivery.log_id == "evt?" + "x" * 60
    assert Delivery(1, "", pika.BasicProperties(), b"", 0.0).log_id == "unknown"
