"""The pika glue: consume the queue, run the handler on a thread pool, settle on the I/O thread.

Threads and who does what:

* The connection thread (the caller of `run`) owns the `BlockingConnection`: it consumes,
  sends heartbeats, and performs every ack and publish. pika is not thread-safe.
* Pool threads parse the message and run the handler, which may block on SMTP for a long time;
  heartbeats keep flowing meanwhile. They hand the outcome back with
  `connection.add_callback_threadsafe`, on the channel the delivery came from.
* A settlement for a channel or connection that is gone is dropped: its delivery tag means
  nothing on a new channel, and the broker redelivers the message anyway (the processed-events
  record then turns the redelivery into a duplicate acknowledged without sending).

Once an hour (and at start-up) the loop hands a housekeeping job to the pool: deleting
processed-event records past their retention, off the delivery path.

A message whose header table pika cannot decode arrives with `headers=None` instead of ending
the connection (`wire_properties.install`), and is dead-lettered with fresh headers saying why;
copies leave out any header pika cannot encode. A settlement that fails for any other reason but
a broken connection is logged and the delivery requeued: no exception may escape a pika callback.

Moving a message to a retry queue or the DLQ publishes a copy on a confirm-mode channel first
and acknowledges the original only once the broker confirmed the copy, so nothing is lost in
between (a crash there leaves two copies; the idempotency record absorbs that).
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions

from email_consumer import failure_headers, retry_policy, wire_properties
from email_consumer.breaker import BreakerState, DeadLetterBreaker, Transition
from email_consumer.connections import CONNECTION_ERRORS, close_quietly, copy_with_headers
from email_consumer.errors import (
    DeliveryPaused,
    EventBusy,
    ServerRefused,
    SmtpRejected,
    UncertainDelivery,
)
from email_consumer.handler import Outcome, WelcomeEmailHandler
from email_consumer.metrics import WorkerMetrics
from email_consumer.retry_policy import DeadLetter, Decision, RetryLater, RetryPolicy
from email_consumer.settings import WorkerSettings
from shared import topology
from shared.amqp import BrokerRefused, BrokerUnavailable, mask_url, open_connection
from shared.events import InvalidEvent, UserRegistered, parse_user_registered
from shared.logging import event_context, get_logger
from shared.settings import BrokerSettings

_log = get_logger(__name__)

_FIRST_RECONNECT_DELAY_S = 0.5
THREADS_PER_CONNECTION = 2
_POLL_S = 0.5


@dataclass(frozen=True)
class _Ack:
    """Done (sent or duplicate, counted when decided): acknowledge."""

    outcome: None = None


@dataclass(frozen=True)
class _Forward:
    """Publish a copy with new headers, then acknowledge the original."""

    exchange: str
    routing_key: str
    headers: dict[str, Any]
    outcome: str  # "delayed" or "dead_lettered"


@dataclass(frozen=True)
class _HandBack:
    """Shutting down mid-retry: return the delivery to the queue untouched."""

    outcome: None = None


_Action = _Ack | _Forward | _HandBack


@dataclass
class _Session:
    """One connection with its channels; settlements for a closed session are dropped."""

    connection: pika.BlockingConnection
    consume_channel: Any
    publish_channel: Any
    active: bool = True
    in_flight: int = 0
    consumer_tag: str | None = field(default=None)


class Worker:
    """Consumes `user_registered` events until `stopping` is set; reconnects on its own."""

    def __init__(
        self,
        *,
        broker: BrokerSettings,
        settings: WorkerSettings,
        policy: RetryPolicy,
        handler: WelcomeEmailHandler,
        metrics: WorkerMetrics,
        stopping: threading.Event,
        host: str | None = None,
        housekeeping: Callable[[], None] | None = None,
        housekeeping_interval_s: float = 3600.0,
        breaker: DeadLetterBreaker | None = None,
    ) -> None:
        self._broker = broker
        self._settings = settings
        self._policy = policy
        self._handler = handler
        self._metrics = metrics
        self._stopping = stopping
        self._host = host or socket.gethostname()
        # A header table pika cannot decode must cost one message, not the connection.
        wire_properties.install()
        # Twice as many threads as emails sent at once (the sender's SMTP connections): while
        # `concurrency` emails are on the wire, the other threads claim and render the next ones
        # and record the finished ones, so no SMTP connection waits for that bookkeeping.
        self._pool = ThreadPoolExecutor(
            THREADS_PER_CONNECTION * settings.concurrency, thread_name_prefix="email-worker"
        )
        self._housekeeping = housekeeping
        self._housekeeping_interval_s = housekeeping_interval_s
        self._next_housekeeping = 0.0  # at start-up first
        self._housekeeping_running: Future[None] | None = None
        self._breaker = breaker or DeadLetterBreaker(
            threshold=settings.breaker_threshold, probe_interval_s=settings.breaker_probe_s
        )
        self._metrics.set_breaker_open(self._breaker.is_open)

    def run(self) -> None:
        """Serve until `stopping` is set, then drain in-flight work; returns normally."""
        delay = _FIRST_RECONNECT_DELAY_S
        try:
            while not self._stopping.is_set():
                self._maybe_housekeep()
                try:
                    connection = open_connection(self._broker)
                except BrokerUnavailable as error:
                    # A refused login or vhost is an error, though still retried.
                    log = _log.error if isinstance(error, BrokerRefused) else _log.warning
                    log("broker unavailable, retrying", error=str(error), delay_s=delay)
                    self._stopping.wait(delay)
                    delay = min(delay * 2, self._settings.reconnect_max_delay_s)
                    continue
                try:
                    session = self._start(connection)
                    delay = _FIRST_RECONNECT_DELAY_S
                    self._serve(session)
                except CONNECTION_ERRORS as error:
                    _log.warning(
                        "broker connection lost, reconnecting",
                        error_type=type(error).__name__,
                        error=str(error),
                        url=mask_url(self._broker.amqp_url),
                    )
                    self._stopping.wait(delay)
                    delay = min(delay * 2, self._settings.reconnect_max_delay_s)
                finally:
                    close_quietly(connection)
        finally:
            # Work still running past the shutdown timeout was handed back by closing the
            # connection; its threads end on their own (bounded by the SMTP timeout).
            self._pool.shutdown(wait=False, cancel_futures=True)
        _log.info("worker stopped")

    def _start(self, connection: pika.BlockingConnection) -> _Session:
        consume_channel = connection.channel()
        topology.declare_topology(consume_channel, retry_delays_s=self._policy.broker_delays_s)
        consume_channel.basic_qos(prefetch_count=self._settings.prefetch)
        publish_channel = connection.channel()
        publish_channel.confirm_delivery()
        session = _Session(connection, consume_channel, publish_channel)
        session.consumer_tag = consume_channel.basic_consume(
            topology.QUEUE, on_message_callback=functools.partial(self._on_message, session)
        )
        _log.info(
            "consuming",
            queue=topology.QUEUE,
            prefetch=self._settings.prefetch,
            concurrency=self._settings.concurrency,
        )
        return session

    def _serve(self, session: _Session) -> None:
        try:
            while not self._stopping.is_set():
                session.connection.process_data_events(time_limit=_POLL_S)
                if session.consume_channel.is_closed:
                    # The broker closed it, the connection stays: a consumer timeout does that
                    # (PRECONDITION_FAILED on 3.10 and 4.0). Its deliveries went back to the
                    # queue; consuming again takes a new session, as after a lost connection.
                    raise BrokerUnavailable("the broker closed the consuming channel")
                self._maybe_housekeep()
            self._drain(session)
        finally:
            session.active = False

    def _drain(self, session: _Session) -> None:
        """Stop taking deliveries, let in-flight ones finish for a bounded time."""
        _log.info("stopping: no new deliveries", in_flight=session.in_flight)
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

    # -- connection thread -------------------------------------------------------------------

    def _on_message(
        self,
        session: _Session,
        channel: Any,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        session.in_flight += 1
        self._pool.submit(
            self._process, session, method.delivery_tag, method.routing_key, properties, body
        )

    def _settle(
        self,
        session: _Session,
        delivery_tag: int,
        properties: pika.BasicProperties,
        body: bytes,
        action: _Action,
        started: float,
        event_id: str,
    ) -> None:
        session.in_flight -= 1
        with event_context(event_id, properties.correlation_id):
            channel = session.consume_channel
            if not session.active or not channel.is_open:
                _log.warning("channel gone: dropping settlement; the broker will redeliver")
                return
            try:
                settled = self._apply(session, delivery_tag, properties, body, action)
            except CONNECTION_ERRORS:
                raise  # the reconnect logic in `run` handles these
            except Exception:  # noqa: BLE001 - nothing may escape a pika callback
                # For example a header pika cannot encode: the worker must survive the message.
                # Requeued, the event comes back; the quorum queue's delivery limit ends a loop.
                _log.exception("could not settle the event; requeueing it")
                channel.basic_nack(delivery_tag, requeue=True)
                settled = False
            if settled and action.outcome is not None:
                self._metrics.count(action.outcome)
            self._metrics.observe_processing(time.monotonic() - started)

    def _apply(
        self,
        session: _Session,
        delivery_tag: int,
        properties: pika.BasicProperties,
        body: bytes,
        action: _Action,
    ) -> bool:
        """Carry out `action`; False when the delivery went back to the queue instead."""
        channel = session.consume_channel
        if isinstance(action, _HandBack):
            channel.basic_nack(delivery_tag, requeue=True)
            return True
        if isinstance(action, _Forward):
            return self._forward(session, delivery_tag, properties, body, action)
        channel.basic_ack(delivery_tag)
        return True

    def _forward(
        self,
        session: _Session,
        delivery_tag: int,
        properties: pika.BasicProperties,
        body: bytes,
        action: _Forward,
    ) -> bool:
        """Publish the copy, then ack the original; False when the copy was refused."""
        copy = copy_with_headers(properties, action.headers)
        try:
            session.publish_channel.basic_publish(
                action.exchange, action.routing_key, body, properties=copy, mandatory=True
            )
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as error:
            # The target refused the copy: keep the original, try again after a redelivery.
            _log.error("could not move event, requeueing", error_type=type(error).__name__)
            session.consume_channel.basic_nack(delivery_tag, requeue=True)
            return False
        session.consume_channel.basic_ack(delivery_tag)
        if action.outcome == "dead_lettered":
            _log.error(
                "event dead-lettered",
                reason=action.headers.get(failure_headers.DEAD_LETTER_REASON),
                error_type=action.headers.get(failure_headers.ERROR_TYPE),
                error=action.headers.get(failure_headers.ERROR_MESSAGE),
                attempts=action.headers.get(failure_headers.ATTEMPTS),
            )
        else:
            _log.warning(
                "event parked for a delayed retry",
                queue=action.routing_key,
                retry_count=action.headers.get(failure_headers.RETRY_COUNT),
            )
        return True

    # -- pool threads ------------------------------------------------------------------------

    def _process(
        self,
        session: _Session,
        delivery_tag: int,
        routing_key: str,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        started = time.monotonic()
        event_id = _safe_id(properties.message_id)
        if not session.active:
            # Queued while the connection went away: the broker redelivers it on the new one,
            # so working on this copy would only race that redelivery.
            return
        try:
            with event_context(event_id, properties.correlation_id):
                action = self._decide(routing_key, properties, body)
        except Exception as error:  # noqa: BLE001 - a bug must not leave the delivery unsettled
            _log.exception("unexpected error while handling an event")
            action = self._after_failure(routing_key, properties, error, 1, permanent=False)
        settle = functools.partial(
            self._settle, session, delivery_tag, properties, body, action, started, event_id
        )
        try:
            session.connection.add_callback_threadsafe(settle)
        except pika.exceptions.ConnectionWrongStateError:
            _log.warning("connection gone: dropping settlement; the broker will redeliver")

    def _decide(self, routing_key: str, properties: pika.BasicProperties, body: bytes) -> _Action:
        undecodable = self._undecodable(routing_key, properties)
        if undecodable is not None:
            return undecodable
        try:
            event = parse_user_registered(body)
        except InvalidEvent as error:
            _log.error("malformed event", error=str(error))
            return self._dead_letter(routing_key, properties, error, 1, retry_policy.MALFORMED)
        with event_context(event.event_id, properties.correlation_id):
            return self._handle(event, routing_key, properties)

    def _undecodable(self, routing_key: str, properties: pika.BasicProperties) -> _Action | None:
        """Dead-letter a message whose header table could not be decoded: no client of the
        queue could read it either. Its copy carries fresh headers saying why."""
        problem = wire_properties.undecodable(properties)
        if problem is None:
            return None
        _log.error("undecodable headers", error=problem)
        error = wire_properties.UndecodableHeaders(problem)
        return self._dead_letter(routing_key, properties, error, 1, retry_policy.MALFORMED)

    def _handle(
        self, event: UserRegistered, routing_key: str, properties: pika.BasicProperties
    ) -> _Action:
        if not self._breaker.allow_attempt():
            paused = DeliveryPaused("the mail server refuses every message; waiting for it")
            return self._park(routing_key, properties, paused, 0)
        result = self._handler.handle(event)
        self._metrics.count("retried", result.attempts - 1)
        if result.outcome is Outcome.SENT:
            self._metrics.count("sent")
            self._metrics.observe_delivered(event.occurred_at)
            self._breaker_moved(self._breaker.record_delivered())
            return _Ack()
        if result.outcome is Outcome.DUPLICATE:
            self._metrics.count("duplicate")
            return _Ack()
        error = result.error
        assert error is not None
        if isinstance(error, UncertainDelivery):
            # Never back to the queue at once, even when stopping: that would resend at once.
            self._metrics.count_uncertain_send()
            decision = self._policy.after_uncertain(
                final=error.final, resend_after_s=self._settings.uncertain_resend_after_s
            )
            return self._settle_decision(routing_key, properties, error, result.attempts, decision)
        if self._refusal_parks(event, error):
            return self._park(routing_key, properties, error, result.attempts)
        if self._stopping.is_set() and not result.permanent:
            _log.info("shutting down: handing the event back to the queue")
            return _HandBack()
        return self._after_failure(
            routing_key, properties, error, result.attempts, permanent=result.permanent
        )

    def _refusal_parks(self, event: UserRegistered, error: BaseException) -> bool:
        """Feed a refusal to the breaker; whether the event must wait instead of failing."""
        if isinstance(error, ServerRefused):
            self._breaker_moved(self._breaker.record_server_refusal(str(error)))
            return True  # a refusal of the server never uses up a retry, breaker or not
        if isinstance(error, SmtpRejected):
            self._breaker_moved(
                self._breaker.record_recipient_refusal(event.data.email, str(error))
            )
            return self._breaker.is_open
        return False

    def _breaker_moved(self, transition: Transition | None) -> None:
        if transition is None:
            return
        self._metrics.set_breaker_open(transition.state is BreakerState.OPEN)
        if transition.state is BreakerState.OPEN:
            _log.error(
                "mail server refuses every message: dead-lettering stopped, events parked in "
                "the retry queues and one tried every probe_s until it accepts again; check "
                "SMTP_HOST, SMTP_USERNAME, SMTP_PASSWORD, MAIL_FROM and the server",
                reason=transition.reason,
                probe_s=self._settings.breaker_probe_s,
            )
        else:
            _log.warning("mail server accepts again: delivery and dead-lettering resumed")

    def _park(
        self,
        routing_key: str,
        properties: pika.BasicProperties,
        error: BaseException,
        attempts: int,
    ) -> _Action:
        """Wait in a retry queue for the breaker's next probe, using up no retry."""
        decision = self._policy.park(at_least_s=self._settings.breaker_probe_s)
        return self._settle_decision(routing_key, properties, error, attempts, decision)

    def _after_failure(
        self,
        routing_key: str,
        properties: pika.BasicProperties,
        error: BaseException,
        attempts: int,
        *,
        permanent: bool,
    ) -> _Action:
        headers = properties.headers or {}
        decision = self._policy.after_failure(
            permanent=permanent,
            broker_retries_done=failure_headers.as_int(headers, failure_headers.RETRY_COUNT),
            busy=isinstance(error, EventBusy),
        )
        return self._settle_decision(routing_key, properties, error, attempts, decision)

    def _settle_decision(
        self,
        routing_key: str,
        properties: pika.BasicProperties,
        error: BaseException,
        attempts: int,
        decision: Decision,
    ) -> _Action:
        if isinstance(decision, RetryLater):
            queue = topology.retry_queue_name(decision.delay_s)
            new_headers = failure_headers.after_failure(
                properties.headers or {},
                error=error,
                attempts=attempts,
                now=datetime.now(UTC),
                host=self._host,
                routing_key=routing_key,
                delayed_retry=decision.counts_as_retry,
            )
            _log.warning(
                "delivery failed", error_type=type(error).__name__, error=str(error), next=queue
            )
            return _Forward(topology.RETRY_EXCHANGE, queue, new_headers, "delayed")
        assert isinstance(decision, DeadLetter)
        return self._dead_letter(routing_key, properties, error, attempts, decision.reason)

    def _dead_letter(
        self,
        routing_key: str,
        properties: pika.BasicProperties,
        error: BaseException,
        attempts: int,
        reason: str,
    ) -> _Forward:
        headers = failure_headers.after_failure(
            properties.headers,
            error=error,
            attempts=attempts,
            now=datetime.now(UTC),
            host=self._host,
            routing_key=routing_key,
            dead_letter_reason=reason,
        )
        return _Forward(
            topology.DEAD_LETTER_EXCHANGE, topology.DEAD_LETTER_QUEUE, headers, "dead_lettered"
        )


def _run_quietly(job: Callable[[], None]) -> None:
    try:
        job()
    except Exception:  # noqa: BLE001 - housekeeping failing must not stop the worker
        _log.exception("housekeeping failed; trying again at the next interval")


def _safe_id(value: object) -> str:
    """The message id for log lines: printable and short, since the sender chose it."""
    if not isinstance(value, str) or not value:
        return "unknown"
    return "".join(c if c.isprintable() else "?" for c in value[:64])
