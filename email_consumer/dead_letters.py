"""Operator tools for the dead-letter queue: list, replay, purge.

How listing stays lossless: it takes up to N messages with `basic_get` *without*
acknowledging them, reads them, then closes its channel, which hands every one of them back to
the DLQ (unacknowledged messages are returned to their queue when their channel closes). Nothing
is ever acknowledged, so a crash mid-listing loses nothing either. While a listing runs, the
messages it holds are invisible to a concurrent replay, which then simply sees fewer.

Replay publishes each copy to the main queue on a confirm-mode channel, and acknowledges (removes)
the DLQ message only after the broker confirmed the copy. It handles at most the messages that
were in the DLQ when it started, so an event that fails again at once cannot loop forever.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from email_consumer import failure_headers as fh
from email_consumer.connections import close_quietly, copy_with_headers
from shared import topology
from shared.amqp import open_connection
from shared.settings import BrokerSettings


@dataclass(frozen=True)
class DeadLetterSummary:
    """What an operator wants to know about one dead-lettered event."""

    event_id: str | None
    correlation_id: str | None
    error_type: str | None
    error_message: str | None
    dead_letter_reason: str | None
    attempts: int
    retry_count: int
    replay_count: int
    first_failure_at: str | None
    last_failure_at: str | None
    worker_host: str | None
    original_routing_key: str | None
    body_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def summarise(properties: pika.BasicProperties, body: bytes) -> DeadLetterSummary:
    headers = properties.headers or {}
    reason = fh.as_text(headers, fh.DEAD_LETTER_REASON)
    if reason is None and "x-death" in headers:
        # Dead-lettered by the broker itself (the main queue's delivery limit).
        reason = "delivery-limit"
    return DeadLetterSummary(
        event_id=properties.message_id,
        correlation_id=properties.correlation_id,
        error_type=fh.as_text(headers, fh.ERROR_TYPE),
        error_message=fh.as_text(headers, fh.ERROR_MESSAGE),
        dead_letter_reason=reason,
        attempts=fh.as_int(headers, fh.ATTEMPTS),
        retry_count=fh.as_int(headers, fh.RETRY_COUNT),
        replay_count=fh.as_int(headers, fh.REPLAY_COUNT),
        first_failure_at=fh.as_text(headers, fh.FIRST_FAILURE_AT),
        last_failure_at=fh.as_text(headers, fh.LAST_FAILURE_AT),
        worker_host=fh.as_text(headers, fh.WORKER_HOST),
        original_routing_key=fh.as_text(headers, fh.ORIGINAL_ROUTING_KEY),
        body_bytes=len(body),
    )


class DeadLetterQueue:
    """The DLQ tools over one broker connection; use as a context manager."""

    def __init__(self, broker: BrokerSettings, retry_delays_s: tuple[int, ...]) -> None:
        self._broker = broker
        self._retry_delays_s = retry_delays_s
        self._connection: pika.BlockingConnection | None = None

    def __enter__(self) -> DeadLetterQueue:
        self._connection = open_connection(self._broker)
        with self._channel() as channel:
            topology.declare_topology(channel, retry_delays_s=self._retry_delays_s)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._connection is not None:
            close_quietly(self._connection)

    def count(self) -> int:
        with self._channel() as channel:
            declared = channel.queue_declare(topology.DEAD_LETTER_QUEUE, passive=True)
            return int(declared.method.message_count)

    def list(self, limit: int | None = None) -> list[DeadLetterSummary]:
        """Up to `limit` dead-lettered events, oldest first; the queue is left as it was."""
        summaries: list[DeadLetterSummary] = []
        with self._channel() as channel:
            # Closing this channel on leaving the block returns every message taken here.
            for _tag, properties, body in self._take(channel, limit):
                summaries.append(summarise(properties, body))
        return summaries

    def replay(self, limit: int | None = None) -> int:
        """Send up to `limit` events back to the main queue; returns how many were moved."""
        moved = 0
        with self._channel() as source, self._channel() as target:
            target.confirm_delivery()
            for tag, properties, body in self._take(source, limit):
                copy = copy_with_headers(properties, fh.for_replay(properties.headers))
                # Through the retry exchange's direct binding to the worker's queue: a replay
                # is for this worker only, not for every subscriber of user.events, and the
                # worker may write to its retry exchange but not to the default exchange.
                target.basic_publish(
                    topology.RETRY_EXCHANGE, topology.QUEUE, body, properties=copy, mandatory=True
                )
                source.basic_ack(tag)
                moved += 1
        return moved

    def purge(self) -> int:
        """Delete every message in the DLQ; returns how many there were."""
        with self._channel() as channel:
            result = channel.queue_purge(topology.DEAD_LETTER_QUEUE)
            return int(result.method.message_count)

    def _take(
        self, channel: Any, limit: int | None
    ) -> Iterator[tuple[int, pika.BasicProperties, bytes]]:
        # Bounded by the count at the start, so messages coming back meanwhile are not re-read.
        available = self.count()
        wanted = available if limit is None else min(limit, available)
        for _ in range(wanted):
            method, properties, body = channel.basic_get(topology.DEAD_LETTER_QUEUE)
            if method is None:
                return
            yield method.delivery_tag, properties, body

    @contextmanager
    def _channel(self) -> Iterator[Any]:
        assert self._connection is not None, "use DeadLetterQueue as a context manager"
        channel = self._connection.channel()
        try:
            yield channel
        finally:
            if channel.is_open:
                channel.close()
