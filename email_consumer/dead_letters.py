"""Operator tools for the dead-letter queue: list, replay, migrate, purge.

Listing is lossless: it takes up to N messages with `basic_get` without acknowledging them,
then closes its channel, which hands them all back (a crash mid-listing too). The DLQ is a
classic queue (`topology.dead_letter_queue_arguments` says why), so each returns to its place
and counts no delivery; one declared by an older version (a quorum queue) is refused by `list`
until `migrate` re-created it. Replay acknowledges a DLQ message only once the broker confirmed
its copy on the main queue, and handles at most the messages there when it started, so an
event that fails again at once cannot loop forever. A header table pika cannot read is listed
with that reason and replayed with fresh headers (`wire_properties`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import pika
import pika.exceptions

from email_consumer import failure_headers as fh
from email_consumer import wire_properties
from email_consumer.connections import close_quietly, copy_with_headers
from shared import topology
from shared.amqp import open_connection
from shared.errors import TransientError
from shared.settings import BrokerSettings

# Where `migrate` keeps the events while it re-creates the DLQ.
_HOLDING_QUEUE: Final = f"{topology.DEAD_LETTER_QUEUE}.migrating"
_PRECONDITION_FAILED: Final = 406
# How long a listing waits for the broker to put the listed messages back.
_RETURN_WAIT_S: Final = 5.0


class DeadLetterQueueOutdated(TransientError):
    """The DLQ still has the arguments of an older version; `dlq migrate` fixes that."""


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
    error_type = fh.as_text(headers, fh.ERROR_TYPE)
    error_message = fh.as_text(headers, fh.ERROR_MESSAGE)
    undecodable = wire_properties.undecodable(properties)
    if undecodable is not None:
        # Put here by something else than this worker (which writes fresh headers): what it
        # recorded is unreadable, the reason it cannot be read is what there is to show.
        error_type, error_message = wire_properties.UndecodableHeaders.__name__, undecodable
    return DeadLetterSummary(
        event_id=_text(properties.message_id),
        correlation_id=_text(properties.correlation_id),
        error_type=error_type,
        error_message=error_message,
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


def _text(value: object) -> str | None:
    """A short-string property as text: pika leaves one that is not UTF-8 as bytes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


class DeadLetterQueue:
    """The DLQ tools over one broker connection; use as a context manager."""

    def __init__(self, broker: BrokerSettings, retry_delays_s: tuple[int, ...]) -> None:
        self._broker = broker
        self._retry_delays_s = retry_delays_s
        self._connection: pika.BlockingConnection | None = None

    def __enter__(self) -> DeadLetterQueue:
        self._connection = open_connection(self._broker)
        with self._channel() as channel:
            # `list` refuses and `migrate` replaces a DLQ declared the old way: no warning here.
            topology.declare_topology(
                channel, retry_delays_s=self._retry_delays_s, warn_old_dead_letter_queue=False
            )
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
        assert self._connection is not None, "use DeadLetterQueue as a context manager"
        if topology.dead_letter_queue_is_current(self._connection) is False:
            # A quorum DLQ counts every listing as a delivery of every listed message, and
            # RabbitMQ 4 drops one past 20: refuse rather than eat the DLQ.
            raise DeadLetterQueueOutdated(
                "the dead-letter queue was declared by an older version (a quorum queue), "
                "which listing could empty on RabbitMQ 4; run `email-consumer dlq migrate` first"
            )
        summaries: list[DeadLetterSummary] = []
        depth = self.count()
        with self._channel() as channel:
            # Closing this channel on leaving the block returns every message taken here.
            for _tag, properties, body in self._take(channel, limit):
                summaries.append(summarise(properties, body))
        if summaries:
            self._wait_until_returned(depth)
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

    def migrate(self) -> int:
        """Re-create a DLQ declared the old way as today's classic queue, without loss;
        returns how many events were moved (0 when there was nothing to do).

        The old DLQ is unbound first, then its events wait in a holding queue while it is
        deleted and declared anew; each is moved with a confirmed publish before its
        acknowledgement, so a crash anywhere leaves every event in one of the two queues, and
        running the command again finishes the job. Meanwhile the worker's dead-letter copies
        are unroutable and requeued, and the main queue's own dead-lettering (at-least-once)
        holds on to its messages until the DLQ is back: nothing is dropped. Events that arrive
        in the new DLQ during the move come before the moved ones.
        """
        assert self._connection is not None, "use DeadLetterQueue as a context manager"
        moved = 0
        with self._channel() as channel:
            channel.queue_declare(
                _HOLDING_QUEUE, durable=True, arguments=topology.dead_letter_queue_arguments()
            )
        while topology.dead_letter_queue_is_current(self._connection) is False:
            with self._channel() as channel:
                # Unbound, the old DLQ receives nothing more while it is emptied and deleted.
                channel.queue_unbind(
                    topology.DEAD_LETTER_QUEUE,
                    topology.DEAD_LETTER_EXCHANGE,
                    routing_key=topology.DEAD_LETTER_QUEUE,
                )
            moved += self._move(topology.DEAD_LETTER_QUEUE, "", _HOLDING_QUEUE)
            if self.count() == 0:  # quorum queues cannot be deleted `if_empty`
                with self._channel() as channel:
                    channel.queue_delete(topology.DEAD_LETTER_QUEUE)
        with self._channel() as channel:
            # The DLQ is gone, or was re-created by the check above after a crash: declare it
            # and bind it again either way (both idempotent).
            topology.declare_topology(channel, retry_delays_s=self._retry_delays_s)
            channel.queue_bind(
                topology.DEAD_LETTER_QUEUE,
                topology.DEAD_LETTER_EXCHANGE,
                routing_key=topology.DEAD_LETTER_QUEUE,
            )
        self._move(_HOLDING_QUEUE, topology.DEAD_LETTER_EXCHANGE, topology.DEAD_LETTER_QUEUE)
        with self._channel() as channel:
            channel.queue_delete(_HOLDING_QUEUE, if_empty=True)
        return moved

    def _move(self, source_queue: str, exchange: str, routing_key: str) -> int:
        """Move every message of `source_queue`, in order, confirmed before acknowledged."""
        moved = 0
        with self._channel() as source, self._channel() as target:
            target.confirm_delivery()
            while True:
                method, properties, body = source.basic_get(source_queue)
                if method is None:
                    return moved
                headers = dict(properties.headers or {})
                headers.pop("x-delivery-count", None)  # the old queue's count, not the event's
                copy = copy_with_headers(properties, headers)
                target.basic_publish(exchange, routing_key, body, properties=copy, mandatory=True)
                source.basic_ack(method.delivery_tag)
                moved += 1

    def purge(self) -> int:
        """Delete every message in the DLQ; returns how many there were."""
        with self._channel() as channel:
            result = channel.queue_purge(topology.DEAD_LETTER_QUEUE)
            return int(result.method.message_count)

    def _wait_until_returned(self, depth: int) -> None:
        """Wait (briefly) until the DLQ holds `depth` messages again after a listing.

        The broker hands the messages of a closed channel back to the queue after it confirmed
        the close: a listing run right after another one (or a replay) could otherwise find
        them still on their way and show an empty DLQ (seen on RabbitMQ 4.0.5). A replay or a
        purge running meanwhile may lower the depth for good, hence the bound.
        """
        deadline = time.monotonic() + _RETURN_WAIT_S
        while self.count() < depth and time.monotonic() < deadline:
            time.sleep(0.01)

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
