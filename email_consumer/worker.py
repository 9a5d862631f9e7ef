"""The pika glue: consume the queue, process deliveries on a thread pool, settle on the I/O thread.

The connection thread (the caller of `run`) owns the `BlockingConnection` and performs every ack
and publish: pika is not thread-safe. Pool threads turn each delivery into an `Action`
(processing.py, routing.py), which may block on SMTP for long while heartbeats keep flowing,
and hand it back with `add_callback_threadsafe`. A settlement for a channel that is gone is
dropped: the broker redelivers the message, and the processed-events record turns that into a
duplicate. What a settlement does on the channels is settlement.py's.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions

from email_consumer.connections import CONNECTION_ERRORS, close_quietly
from email_consumer.metrics import WorkerMetrics
from email_consumer.processing import DeliveryProcessor
from email_consumer.routing import Action, Delivery
from email_consumer.settings import WorkerSettings
from email_consumer.settlement import Settler
from email_consumer.status import WorkerStatus
from shared import topology
from shared.amqp import BrokerUnavailable, mask_url, open_connection
from shared.backoff import Doubling, log_method_for
from shared.logging import event_context, get_logger
from shared.settings import BrokerSettings
from shared.tracing import within_message

_log = get_logger(__name__)

_FIRST_RECONNECT_DELAY_S = 0.5
THREADS_PER_CONNECTION = 2
_POLL_S = 0.5


@dataclass
class _Session:
    """One connection with its channels; settlements for a closed session are dropped."""

    connection: pika.BlockingConnection
    consume_channel: Any
    publish_channel: Any
    active: bool = True
    in_flight: int = 0
    consumer_tag: str | None = field(default=None)
    # Set when the broker cancelled the consumer (basic.cancel): its queue was deleted, or its
    # leader moved. The channel stays open; the loop subscribes again.
    cancelled_by_broker: bool = False


class Worker:
    """Consumes `user_registered` events until `stopping` is set; reconnects on its own."""

    def __init__(
        self,
        *,
        broker: BrokerSettings,
        settings: WorkerSettings,
        processor: DeliveryProcessor,
        metrics: WorkerMetrics,
        stopping: threading.Event,
        housekeeping: Callable[[], None] | None = None,
        housekeeping_interval_s: float = 3600.0,
        status: WorkerStatus | None = None,
    ) -> None:
        self._broker = broker
        self._settings = settings
        self._processor = processor
        self._settler = Settler(metrics)
        self._stopping = stopping
        # Twice as many threads as emails sent at once (the sender's SMTP connections): while
        # `concurrency` emails are on the wire, the other threads claim, render and record.
        self._pool = ThreadPoolExecutor(
            THREADS_PER_CONNECTION * settings.concurrency, thread_name_prefix="email-worker"
        )
        self._housekeeping = housekeeping
        self._housekeeping_interval_s = housekeeping_interval_s
        self._next_housekeeping = 0.0  # at start-up first
        self._housekeeping_running: Future[None] | None = None
        self._status = status or WorkerStatus()

    def run(self) -> None:
        """Serve until `stopping` is set, then drain in-flight work; returns normally."""
        backoff = Doubling(_FIRST_RECONNECT_DELAY_S, self._settings.reconnect_max_delay_s)
        try:
            while not self._stopping.is_set():
                self._status.loop_ran()
                self._maybe_housekeep()
                try:
                    connection = open_connection(self._broker)
                except BrokerUnavailable as error:
                    wait_s = backoff.failed()
                    log = log_method_for(_log, error)
                    log("broker unavailable, retrying", error=str(error), retry_in_s=wait_s)
                    self._stopping.wait(wait_s)
                    continue
                self._status.connected()
                try:
                    session = self._start(connection)
                    backoff.reset()
                    self._serve(session)
                except CONNECTION_ERRORS as error:
                    wait_s = backoff.failed()
                    _log.warning(
                        "broker connection lost, reconnecting",
                        error_type=type(error).__name__,
                        error=str(error),
                        url=mask_url(self._broker.amqp_url),
                        retry_in_s=wait_s,
                    )
                    self._stopping.wait(wait_s)
                finally:
                    self._status.disconnected()
                    close_quietly(connection)
        finally:
            # Work still running past the shutdown timeout was handed back by closing the
            # connection; its threads end on their own (bounded by the SMTP timeout).
            self._pool.shutdown(wait=False, cancel_futures=True)
        _log.info("worker stopped")

    def _start(self, connection: pika.BlockingConnection) -> _Session:
        consume_channel = connection.channel()
        topology.declare_topology(
            consume_channel, retry_delays_s=self._processor.router.policy.broker_delays_s
        )
        consume_channel.basic_qos(prefetch_count=self._settings.prefetch)
        publish_channel = connection.channel()
        publish_channel.confirm_delivery()
        session = _Session(connection, consume_channel, publish_channel)
        consume_channel.add_on_cancel_callback(functools.partial(_cancelled_by_broker, session))
        self._subscribe(session)
        _log.info(
            "consuming",
            queue=topology.QUEUE,
            prefetch=self._settings.prefetch,
            concurrency=self._settings.concurrency,
        )
        return session

    def _subscribe(self, session: _Session) -> None:
        session.cancelled_by_broker = False
        session.consumer_tag = session.consume_channel.basic_consume(
            topology.QUEUE, on_message_callback=functools.partial(self._on_message, session)
        )
        self._status.consuming(True)

    def _serve(self, session: _Session) -> None:
        try:
            while not self._stopping.is_set():
                session.connection.process_data_events(time_limit=_POLL_S)
                self._status.loop_ran()
                if session.consume_channel.is_closed:
                    # The broker closed it, the connection stays: a consumer timeout does that
                    # (PRECONDITION_FAILED on 3.10 and 4.0). Its deliveries went back to the
                    # queue; consuming again takes a new session, as after a lost connection.
                    raise BrokerUnavailable("the broker closed the consuming channel")
                if session.cancelled_by_broker:
                    self._subscribe_again(session)
                self._maybe_housekeep()
            self._drain(session)
        finally:
            session.active = False

    def _subscribe_again(self, session: _Session) -> None:
        """After a basic.cancel: declare what is missing (a deleted queue) and consume again.

        Without this the loop would go on polling a channel with no consumer: alive, silent
        and idle. Deliveries already handed to the pool are settled on the same channel, whose
        delivery tags stay valid. A failure here is a connection error: `run` reconnects.
        """
        _log.warning("the broker cancelled the consumer; subscribing again", queue=topology.QUEUE)
        topology.declare_topology(
            session.consume_channel, retry_delays_s=self._processor.router.policy.broker_delays_s
        )
        self._subscribe(session)

    def _drain(self, session: _Session) -> None:
        """Stop taking deliveries, let in-flight ones finish for a bounded time."""
        _log.info("stopping: no new deliveries", in_flight=session.in_flight)
        self._status.consuming(False)
        # pika returns (nacks) deliveries it has not yet handed to `_on_message`; those already
        # handed over run to completion below.
        session.consume_channel.basic_cancel(session.consumer_tag)
        deadline = time.monotonic() + self._settings.shutdown_timeout_s
        while session.in_flight > 0 and time.monotonic() < deadline:
            session.connection.process_data_events(time_limit=0.1)
        if session.in_flight:
            # Closing the connection returns them to the queue; another worker takes them.
            _log.warning("shutdown timeout: handing back in-flight events", count=session.in_flight)

    def _maybe_housekeep(self) -> None:
        """Start the periodic housekeeping on a pool thread when due (never on the hot path)."""
        if self._housekeeping is None or time.monotonic() < self._next_housekeeping:
            return
        if self._housekeeping_running is not None and not self._housekeeping_running.done():
            return
        self._next_housekeeping = time.monotonic() + self._housekeeping_interval_s
        self._housekeeping_running = self._pool.submit(_run_quietly, self._housekeeping)

    # -- pool threads ------------------------------------------------------------------------

    def _process(self, session: _Session, delivery: Delivery) -> None:
        if not session.active:
            # Queued while the connection went away: the broker redelivers it on the new one,
            # so working on this copy would only race that redelivery.
            return
        action = self._processor.process(delivery)
        carry_out = functools.partial(self._carry_out, session, delivery, action)
        try:
            session.connection.add_callback_threadsafe(carry_out)
        except pika.exceptions.ConnectionWrongStateError:
            _log.warning("connection gone: dropping settlement; the broker will redeliver")

    # -- connection thread -------------------------------------------------------------------

    def _on_message(
        self,
        session: _Session,
        channel: Any,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        delivery = Delivery(
            method.delivery_tag, method.routing_key, properties, body, time.monotonic()
        )
        session.in_flight += 1
        self._status.delivery_taken()
        self._pool.submit(self._process, session, delivery)

    def _carry_out(self, session: _Session, delivery: Delivery, action: Action) -> None:
        """Settle on the connection thread; a settlement for a closed session is dropped."""
        session.in_flight -= 1
        self._status.delivery_settled()
        with (
            event_context(delivery.log_id, delivery.properties.correlation_id),
            within_message(delivery.headers),
        ):
            if not session.active:
                _log.warning("session gone: dropping settlement; the broker will redeliver")
                return
            self._settler.settle(session.consume_channel, session.publish_channel, delivery, action)


def _cancelled_by_broker(session: _Session, _frame: Any) -> None:
    # Called by pika inside process_data_events; the loop subscribes again once it returns.
    session.cancelled_by_broker = True


def _run_quietly(job: Callable[[], None]) -> None:
    try:
        job()
    except Exception:  # noqa: BLE001 - housekeeping failing must not stop the worker
        _log.exception("housekeeping failed; trying again at the next interval")
