"""Settling a delivery (settlement.py): nothing may escape a pika callback.

The broker path is covered by the integration tests; these fake the two channels, because a
copy that pika cannot encode or the broker refuses cannot be produced on demand there.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import pika
import pika.exceptions
import pytest

from email_consumer.metrics import WorkerMetrics
from email_consumer.routing import Ack, Action, Delivery, Forward, HandBack
from email_consumer.settlement import Settler


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
