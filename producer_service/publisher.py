"""Publishing outbox events to RabbitMQ with pipelined publisher confirms.

pika's BlockingChannel waits for each confirm in `basic_publish`; this adapter drives a
`SelectConnection` instead: `start` writes a whole batch (`mandatory=True`, in one buffer: see
producer_service/publish_frames.py), and `finish` runs the I/O loop until the broker has
confirmed every delivery tag of that batch, so a caller may start the next batch first. A
`basic.return` arrives before its ack, so returns are remembered by `message_id` and that ack
counts as a failure. When the connection fails, every batch still waiting fails with it.

With tracing on, each publish is a PRODUCER span, a child of the registration's span (the
traceparent stored with the outbox row), from the write to the broker's confirm; its context
goes out in the `traceparent` header. With tracing off, a stored traceparent is passed on as it
is, and nothing else is done per event.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Final

import pika
import pika.exceptions
import pika.spec
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from producer_service.ports import OutboxMessage, PublishInFlight, PublishOutcome
from producer_service.publish_frames import BatchWriter, Publish, batch_writer
from shared.amqp import (
    BrokerUnavailable,
    connection_failed,
    connection_parameters,
    failure_reason,
    mask_url,
    open_connection,
)
from shared.logging import get_logger
from shared.settings import BrokerSettings
from shared.topology import EXCHANGE, declare_topology
from shared.tracing import TRACEPARENT, context_of, get_tracer, inject, is_enabled
from shared.tracing import messaging_attributes as tracing_attributes

APP_ID: Final = "producer_service"
_CLOSE_TIMEOUT_S: Final = 5.0
PUBLISH_SPAN: Final = f"publish {EXCHANGE}"
_log = get_logger(__name__)
_tracer = get_tracer(__name__)


def declare_producer_topology(settings: BrokerSettings) -> None:
    """Declare the exchange and the worker's queues, so no event is unroutable before it starts.

    The retry queues are left to the worker, which owns their delays.
    """
    connection = open_connection(settings)
    try:
        declare_topology(connection.channel(), retry_delays_s=())
    except pika.exceptions.AMQPError as error:
        raise BrokerUnavailable(f"declaring the topology failed: {error!r}") from None
    finally:
        if connection.is_open:
            connection.close()


class _Batch:
    """One `start`ed batch: what its confirms said so far, and how many are still due."""

    __slots__ = ("connection_lost", "due", "failed", "messages", "published", "refused")

    def __init__(self, messages: Sequence[OutboxMessage]) -> None:
        self.messages = messages
        self.due = 0
        self.published: set[str] = set()
        self.failed: dict[str, str] = {}
        self.refused: set[str] = set()
        self.connection_lost = False


class ConfirmingPublisher:
    """One connection and channel in confirm mode, used from one thread."""

    def __init__(self, settings: BrokerSettings, *, confirm_timeout_s: float) -> None:
        self._settings = settings
        self._confirm_timeout_s = confirm_timeout_s
        self._masked_url = mask_url(settings.amqp_url)
        self._connection: Any = None
        self._channel: Any = None
        self._write_batch: BatchWriter | None = None
        self._ready = False
        self._failure: str | None = None
        self._open_error: BaseException | str | None = None
        # Set by `close`: from then on only the broker's close-ok ends the I/O loop (a channel
        # closing first is part of a clean close, not a failure to stop for).
        self._closing = False
        self._stop_when: Callable[[], bool] | None = None
        self._next_tag = 0
        # Delivery tag -> (its batch, event id, its span when tracing) of every publish not yet
        # acked or nacked, oldest first.
        self._unconfirmed: OrderedDict[int, tuple[_Batch, str, Span | None]] = OrderedDict()
        # Event id -> why the broker returned it; read when its ack (or nack) arrives.
        self._returned: dict[str, str] = {}

    @classmethod
    def connect(
        cls, settings: BrokerSettings, *, confirm_timeout_s: float, declare: bool = True
    ) -> ConfirmingPublisher:
        """A publisher ready to publish, or `BrokerUnavailable`."""
        if declare:
            declare_producer_topology(settings)
        publisher = cls(settings, confirm_timeout_s=confirm_timeout_s)
        publisher._open()
        return publisher

    @property
    def is_open(self) -> bool:
        return bool(self._ready and self._failure is None and self._channel.is_open)

    def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        return self.finish(self.start(messages))

    def start(self, messages: Sequence[OutboxMessage]) -> PublishInFlight:
        batch = _Batch(messages)
        if not self.is_open:
            reason = f"not connected: {self._failure or 'closed'}"
            batch.failed = dict.fromkeys(_ids(messages), reason)
            batch.connection_lost = True
            return batch
        tracing = is_enabled()  # once per batch, not per event
        publishes: list[Publish] = []
        for message in messages:
            self._next_tag += 1
            span = _publish_span(message) if tracing else None
            self._unconfirmed[self._next_tag] = (batch, message.event_id, span)
            batch.due += 1
            properties = _properties(message, _traceparent(message, span))
            publishes.append((message.routing_key, message.body, properties))
        try:
            self._write(publishes)
        except pika.exceptions.AMQPError as error:
            self._failure = f"publishing failed: {error!r}"
            self._give_up()
        return batch

    def _write(self, publishes: Sequence[Publish]) -> None:
        """Hand the batch to pika: in one buffer where this pika allows it (publish_frames)."""
        if self._write_batch is not None:
            self._write_batch(publishes)
            return
        for routing_key, body, properties in publishes:
            self._channel.basic_publish(
                EXCHANGE, routing_key, body, properties=properties, mandatory=True
            )

    def finish(self, in_flight: PublishInFlight) -> PublishOutcome:
        batch = in_flight
        assert isinstance(batch, _Batch), "finish() takes what this publisher's start() returned"
        if batch.due and self._failure is None:
            self._run_until(lambda: not batch.due, self._confirm_timeout_s)
            if batch.due and self._failure is None:
                self._failure = f"no confirm within {self._confirm_timeout_s:g} s"
        if self._failure is not None:
            # Every batch still waiting fails with this one: the connection is no good.
            batch.connection_lost = True
            self._give_up()
        for message in batch.messages:
            if message.event_id not in batch.published and message.event_id not in batch.failed:
                batch.failed[message.event_id] = self._failure or "not confirmed"
        return PublishOutcome(
            frozenset(batch.published),
            batch.failed,
            batch.connection_lost,
            refused=frozenset(batch.refused),
        )

    def idle(self, seconds: float) -> None:
        if self.is_open:
            self._run_until(lambda: False, seconds)

    def close(self) -> None:
        connection = self._connection
        if connection is None:
            return
        self._closing = True
        if not (connection.is_closing or connection.is_closed):
            # Also aborts a connection still opening (a connect that timed out).
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()
        if not connection.is_closed:
            # Until the broker's Connection.CloseOk: leaving before it, the broker logs "client
            # unexpectedly closed TCP connection" for every registration.
            self._run_until(lambda: bool(connection.is_closed), _CLOSE_TIMEOUT_S)
        self._ready = False

    # ---- opening ---------------------------------------------------------------------------

    def _open(self) -> None:
        parameters = connection_parameters(self._settings)
        self._connection = pika.SelectConnection(
            parameters,
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_connection_closed,
        )
        self._run_until(lambda: self._ready, float(parameters.socket_timeout or 10) + 5.0)
        if not self._ready:
            error = self._open_error or self._failure or "timed out"
            self.close()
            raise connection_failed(self._masked_url, error)
        _log.info("publisher connected", url=self._masked_url)

    def _on_connection_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        self._write_batch = batch_writer(channel, EXCHANGE)
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: Any) -> None:
        self._ready = True
        self._wake()

    # ---- failures --------------------------------------------------------------------------

    def _on_open_error(self, _connection: Any, error: BaseException | str) -> None:
        self._open_error = error
        self._failure = failure_reason(error)
        self._wake()

    def _on_connection_closed(self, _connection: Any, reason: BaseException) -> None:
        if self._failure is None:
            self._failure = f"connection closed: {_describe(reason)}"
        self._wake()

    def _on_channel_closed(self, _channel: Any, reason: BaseException) -> None:
        if self._failure is None:
            self._failure = f"channel closed: {_describe(reason)}"
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        self._wake()

    # ---- confirms and returns --------------------------------------------------------------

    def _on_return(
        self, _channel: Any, method: Any, properties: pika.spec.BasicProperties, _body: bytes
    ) -> None:
        self._returned[str(properties.message_id)] = (
            f"returned by the broker: {method.reply_code} {method.reply_text}"
        )

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        confirmed = self._pop_confirmed(int(method.delivery_tag), bool(method.multiple))
        for batch, event_id, span in confirmed:
            batch.due -= 1
            returned = self._returned.pop(event_id, None)
            if not acked:
                batch.failed[event_id] = "refused by the broker (basic.nack)"
                batch.refused.add(event_id)
            elif returned is not None:
                batch.failed[event_id] = returned
            else:
                batch.published.add(event_id)
            if span is not None:
                _end_span(span, batch.failed.get(event_id))
        self._wake()

    def _pop_confirmed(self, tag: int, multiple: bool) -> list[tuple[_Batch, str, Span | None]]:
        if not multiple:
            settled = self._unconfirmed.pop(tag, None)
            return [] if settled is None else [settled]
        settled_list = []
        while self._unconfirmed:
            oldest = next(iter(self._unconfirmed))
            if oldest > tag:
                break
            settled_list.append(self._unconfirmed.pop(oldest))
        return settled_list

    def _give_up(self) -> None:
        """Fail every publish still unconfirmed, in whichever batch, and close the connection.

        Late confirms would carry tags no longer tracked: the next batch starts on a new
        connection.
        """
        reason = self._failure or "connection closed"
        for batch, event_id, span in self._unconfirmed.values():
            batch.due -= 1
            batch.failed[event_id] = reason
            batch.connection_lost = True
            if span is not None:
                _end_span(span, reason)
        self._unconfirmed.clear()
        self._returned.clear()
        if self._ready:  # closed once is enough: a close that timed out is not waited for again
            self.close()

    # ---- driving the I/O loop --------------------------------------------------------------

    def _run_until(self, done: Callable[[], bool], timeout_s: float) -> None:
        """Run pika's I/O loop until `done()`, a failure, or the timeout, whichever is first."""
        if done() or self._connection is None:
            return
        ioloop = self._connection.ioloop
        self._stop_when = done
        timer = ioloop.call_later(timeout_s, ioloop.stop)
        try:
            ioloop.start()
        finally:
            ioloop.remove_timeout(timer)
            self._stop_when = None

    def _wake(self) -> None:
        if self._stop_when is None:
            return
        failed = self._failure is not None and not self._closing
        if self._stop_when() or failed or self._connection.is_closed:
            self._connection.ioloop.stop()


def _publish_span(message: OutboxMessage) -> Span:
    """The PRODUCER span of one publish, continuing the registration's trace."""
    attributes: dict[str, str | int] = {
        **tracing_attributes(
            destination=EXCHANGE,
            routing_key=message.routing_key,
            message_id=message.event_id,
            operation="publish",
        ),
        "messaging.message.conversation_id": message.correlation_id,
        "messaging.message.body.size": len(message.body),
    }
    return _tracer.start_span(
        PUBLISH_SPAN,
        context=context_of(message.traceparent),
        kind=SpanKind.PRODUCER,
        attributes=attributes,
    )


def _traceparent(message: OutboxMessage, span: Span | None) -> str | None:
    """What goes in the `traceparent` header: the publish span's context, else the stored one."""
    if span is None:
        return message.traceparent
    carrier: dict[str, str] = {}
    inject(carrier, trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT)


def _end_span(span: Span, failure: str | None) -> None:
    if failure is not None:
        span.set_status(StatusCode.ERROR, failure)
    span.end()


def _properties(message: OutboxMessage, traceparent: str | None) -> pika.BasicProperties:
    headers = dict(message.headers)
    if traceparent is not None:
        headers[TRACEPARENT] = traceparent
    return pika.BasicProperties(
        delivery_mode=pika.DeliveryMode.Persistent,
        content_type="application/json",
        message_id=message.event_id,
        type=message.event_type,
        app_id=APP_ID,
        timestamp=int(message.created_at.timestamp()),
        correlation_id=message.correlation_id,
        headers=headers,
    )


def _ids(messages: Sequence[OutboxMessage]) -> list[str]:
    return [message.event_id for message in messages]


def _describe(error: BaseException | str) -> str:
    # pika's connection errors can quote the parameters; only the type and reason are kept,
    # and the URL is always shown masked.
    return error if isinstance(error, str) else f"{type(error).__name__}: {error}".rstrip(": ")
