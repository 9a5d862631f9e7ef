"""Settling a delivery (settlement.py): nothing may escape a pika callback.

The broker path is covered by the integration tests; these fake the two channels, because a
copy that pika cannot encode or the broker refuses cannot be produced on demand there.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from typing import Any

import pika
import pika.exceptions
import pytest

from email_consumer.metrics import WorkerMetrics
from email_consumer.routing import Ack, Action, Delivery, Forward, HandBack
from email_consumer.settlement import REFUSALS_BEFORE_RECONNECT, Settler
from shared.amqp import BrokerUnavailable


class FakeChannel:
    def __init__(self, publish_error: BaseException | None = None) -> None:
        self.is_open = True
        self.publish_error = publish_error
        self.acked: list[int] = []
        self.nacked: list[tuple[int, bool]] = []
        self.published = 0

    def basic_publish(self, *args: Any, **kwargs: Any) -> None:
        if self.publish_error is not None:
            raise self.publish_error
        self.published += 1

    def basic_ack(self, delivery_tag: int) -> None:
        self.acked.append(delivery_tag)

    def basic_nack(self, delivery_tag: int, requeue: bool) -> None:
        self.nacked.append((delivery_tag, requeue))


TO_DLQ = Forward("dlx", "dlq", {"attempts": 1}, "dead_lettered")


def _settle(
    publish_error: BaseException | None,
    action: Action = TO_DLQ,
    *,
    channel_open: bool = True,
) -> tuple[FakeChannel, WorkerMetrics]:
    metrics = WorkerMetrics()
    consume, publish = FakeChannel(), FakeChannel(publish_error)
    consume.is_open = channel_open
    delivery = Delivery(7, "user.registered", pika.BasicProperties(), b"{}", time.monotonic())
    Settler(metrics).settle(consume, publish, delivery, action)
    return consume, metrics


def _dead_lettered(metrics: WorkerMetrics) -> float:
    value = metrics.registry.get_sample_value(
        "email_consumer_events_total", {"outcome": "dead_lettered"}
    )
    return value or 0.0


def test_a_copy_pika_cannot_encode_requeues_the_original_instead_of_crashing() -> None:
    consume, metrics = _settle(struct.error("argument out of range"))
    assert consume.nacked == [(7, True)]
    assert consume.acked == []
    assert _dead_lettered(metrics) == 0


def test_a_copy_the_broker_refuses_is_not_counted_as_moved() -> None:
    consume, metrics = _settle(pika.exceptions.UnroutableError([]))
    assert consume.nacked == [(7, True)]
    assert _dead_lettered(metrics) == 0


def test_a_moved_copy_acks_the_original_and_is_counted() -> None:
    consume, metrics = _settle(None)
    assert consume.acked == [7]
    assert _dead_lettered(metrics) == 1


def test_connection_errors_still_reach_the_reconnect_logic() -> None:
    with pytest.raises(pika.exceptions.StreamLostError):
        _settle(pika.exceptions.StreamLostError("connection lost"))


def test_an_ack_and_a_hand_back_are_one_call_each() -> None:
    acked, _ = _settle(None, Ack())
    assert (acked.acked, acked.nacked) == ([7], [])
    handed_back, _ = _settle(None, HandBack())
    assert (handed_back.acked, handed_back.nacked) == ([], [(7, True)])


def test_a_settlement_for_a_closed_channel_is_dropped() -> None:
    consume, metrics = _settle(None, channel_open=False)
    assert (consume.acked, consume.nacked) == ([], [])
    assert _dead_lettered(metrics) == 0


def _settle_in_turn(
    settler: Settler, publish_errors: Sequence[BaseException | None]
) -> FakeChannel:
    """Settle one delivery per entry on the same channels, each copy meeting that outcome."""
    consume, publish = FakeChannel(), FakeChannel()
    for tag, error in enumerate(publish_errors, start=1):
        publish.publish_error = error
        delivery = Delivery(tag, "user.registered", pika.BasicProperties(), b"{}", time.monotonic())
        settler.settle(consume, publish, delivery, TO_DLQ)
    return consume


def _nack() -> pika.exceptions.NackError:
    return pika.exceptions.NackError([])


def test_copies_refused_in_a_row_end_the_connection_each_original_requeued() -> None:
    settler = Settler(WorkerMetrics())
    refused = [_nack() for _ in range(REFUSALS_BEFORE_RECONNECT - 1)]
    consume = _settle_in_turn(settler, refused)
    assert consume.nacked == [(tag, True) for tag in range(1, REFUSALS_BEFORE_RECONNECT)]
    consume, publish = FakeChannel(), FakeChannel(_nack())
    delivery = Delivery(99, "user.registered", pika.BasicProperties(), b"{}", time.monotonic())
    with pytest.raises(
        BrokerUnavailable, match=f"refused {REFUSALS_BEFORE_RECONNECT} copies in a row"
    ):
        settler.settle(consume, publish, delivery, TO_DLQ)
    # The one that tipped it is requeued too, before the connection goes.
    assert consume.nacked == [(99, True)]


def test_a_confirmed_copy_between_refusals_keeps_the_connection() -> None:
    settler = Settler(WorkerMetrics())
    almost = [_nack() for _ in range(REFUSALS_BEFORE_RECONNECT - 1)]
    consume = _settle_in_turn(settler, [*almost, None, *almost])
    assert consume.acked == [REFUSALS_BEFORE_RECONNECT]
    assert len(consume.nacked) == 2 * len(almost)


def test_unroutable_copies_keep_the_connection() -> None:
    # No route is the same on every channel and every node: a new connection cannot help.
    unroutable = [pika.exceptions.UnroutableError([]) for _ in range(2 * REFUSALS_BEFORE_RECONNECT)]
    consume = _settle_in_turn(Settler(WorkerMetrics()), unroutable)
    assert len(consume.nacked) == len(unroutable)
