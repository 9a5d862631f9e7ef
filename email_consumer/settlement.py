"""Carrying out a routing `Action` on the broker: ack, requeue, or move a copy then ack.

Runs on the connection thread, as a pika callback, so nothing but a connection error may
escape: a copy pika cannot encode or the broker refuses requeues the original instead. A move
publishes the copy on a confirm-mode channel and acknowledges the original only once the copy
is confirmed, so a crash in between leaves two copies, never none. Kept apart from the worker
so that each of these outcomes is unit-tested with fake channels.

Copies refused (`basic.nack`) several times in a row end the connection: on RabbitMQ 3.10 a
channel whose first publish to a quorum queue falls inside a leader election can be refused for
good, while a new connection a moment later is not (docs/RELIABILITY.md). Requeueing on that
channel would go round forever; the worker's reconnect moves to the next node instead.
"""

from __future__ import annotations

import time
from typing import Any

import pika.exceptions

from email_consumer import failure_headers
from email_consumer.connections import CONNECTION_ERRORS, copy_with_headers
from email_consumer.metrics import WorkerMetrics
from email_consumer.routing import Action, Delivery, Forward, HandBack
from shared.amqp import BrokerUnavailable
from shared.logging import get_logger

_log = get_logger(__name__)

# Refused copies in a row, none confirmed between, that end the connection. More than one:
# a single refusal (the target's node restarting) is the broker's answer for that queue, not a
# sign the channel is stuck.
REFUSALS_BEFORE_RECONNECT = 3


class Settler:
    """Settles deliveries of one consuming channel, copies going out on a confirming one."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics
        self._refusals_in_a_row = 0

    def settle(
        self, consume_channel: Any, publish_channel: Any, delivery: Delivery, action: Action
    ) -> None:
        """Translate `action` into acks, nacks and publishes; a closed channel drops it (the
        broker redelivers the message)."""
        if not consume_channel.is_open:
            _log.warning("channel gone: dropping settlement; the broker will redeliver")
            return
        try:
            if isinstance(action, Forward):
                self._forward(consume_channel, publish_channel, delivery, action)
            elif isinstance(action, HandBack):
                _log.info("shutting down: handing the event back to the queue")
                consume_channel.basic_nack(delivery.tag, requeue=True)
            else:
                consume_channel.basic_ack(delivery.tag)
        except CONNECTION_ERRORS:
            raise  # the worker's reconnect logic handles these
        except Exception:  # noqa: BLE001 - nothing may escape a pika callback
            # For example a header pika cannot encode: the worker must survive the message.
            # Requeued, the event comes back; the quorum queue's delivery limit ends a loop.
            _log.exception("could not settle the event; requeueing it")
            consume_channel.basic_nack(delivery.tag, requeue=True)
        self._metrics.observe_processing(time.monotonic() - delivery.received_s)

    def _forward(
        self, consume_channel: Any, publish_channel: Any, delivery: Delivery, action: Forward
    ) -> None:
        """Publish the copy, then ack the original; requeue the original if the copy is refused."""
        copy = copy_with_headers(delivery.properties, action.headers)
        try:
            publish_channel.basic_publish(
                action.exchange, action.routing_key, delivery.body, properties=copy, mandatory=True
            )
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as error:
            # The target refused the copy: keep the original, try again after a redelivery.
            _log.error("could not move event, requeueing", error_type=type(error).__name__)
            consume_channel.basic_nack(delivery.tag, requeue=True)
            if isinstance(error, pika.exceptions.NackError):
                self._count_refusal()
            return
        self._refusals_in_a_row = 0
        consume_channel.basic_ack(delivery.tag)
        self._metrics.count(action.counted_as)
        headers = action.headers
        if action.counted_as == "dead_lettered":
            _log.error(
                "event dead-lettered",
                reason=headers.get(failure_headers.DEAD_LETTER_REASON),
                error_type=headers.get(failure_headers.ERROR_TYPE),
                error=headers.get(failure_headers.ERROR_MESSAGE),
                attempts=headers.get(failure_headers.ATTEMPTS),
            )
        else:
            _log.warning(
                "event parked for a delayed retry",
                queue=action.routing_key,
                retry_count=headers.get(failure_headers.RETRY_COUNT),
                error_type=headers.get(failure_headers.ERROR_TYPE),
                error=headers.get(failure_headers.ERROR_MESSAGE),
            )

    def _count_refusal(self) -> None:
        """Raise once `REFUSALS_BEFORE_RECONNECT` copies in a row were refused (see above)."""
        self._refusals_in_a_row += 1
        if self._refusals_in_a_row < REFUSALS_BEFORE_RECONNECT:
            return
        refused, self._refusals_in_a_row = self._refusals_in_a_row, 0
        raise BrokerUnavailable(
            f"the broker refused {refused} copies in a row and confirmed none;"
            " moving to a new connection"
        )
