"""From a delivery to its `Action`, on a pool thread: read the event, ask the breaker, run the
handler, count what happened, and let the router (routing.py) say where the delivery goes.

With tracing on, each delivery is a CONSUMER span continuing the trace its `traceparent` header
carries (the registration's), with the handler's claim and send as its children."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Final

from opentelemetry.trace import Span, SpanKind, StatusCode

from email_consumer import routing, wire_properties
from email_consumer.breaker import BreakerState, DeadLetterBreaker, Transition
from email_consumer.errors import ServerRefused, SmtpRejected, UncertainDelivery
from email_consumer.handler import HandlingResult, Outcome
from email_consumer.metrics import WorkerMetrics
from email_consumer.routing import Action, Delivery, DeliveryOutcome, Router
from shared.events import InvalidEvent, UserRegistered, parse_user_registered
from shared.logging import event_context, get_logger
from shared.topology import QUEUE
from shared.tracing import NO_SPAN, extract, get_tracer, is_enabled, messaging_attributes, traced

PROCESS_SPAN: Final = f"process {QUEUE}"
# Outcomes that leave the event unsent for now: its span ends with an error status.
_FAILURES: Final = (routing.Failed, routing.Unreadable, routing.Crashed)
_log = get_logger(__name__)
_tracer = get_tracer(__name__)

Handle = Callable[[UserRegistered], HandlingResult]


class DeliveryProcessor:
    """Turns each delivery into an `Action`; never raises."""

    def __init__(
        self,
        *,
        handle: Handle,
        router: Router,
        breaker: DeadLetterBreaker,
        metrics: WorkerMetrics,
        stopping: threading.Event,
    ) -> None:
        self._handle = handle
        self.router = router
        self._breaker = breaker
        self._metrics = metrics
        self._stopping = stopping
        self._metrics.set_breaker_open(breaker.is_open)

    def process(self, delivery: Delivery) -> Action:
        with (
            _consumer_span(delivery) as span,
            event_context(delivery.log_id, delivery.properties.correlation_id),
        ):
            outcome: DeliveryOutcome
            try:
                outcome = self._outcome(delivery)
                action = self.router.route(delivery, outcome, now=datetime.now(UTC))
            except Exception as error:  # noqa: BLE001 - a bug must not leave the delivery unsettled
                _log.exception("unexpected error while handling an event")
                outcome = routing.Crashed(error)
                action = self.router.route(delivery, outcome, now=datetime.now(UTC))
            if span is not None:
                span.set_attribute("email_consumer.outcome", type(outcome).__name__)
                span.set_attribute("email_consumer.action", type(action).__name__)
                if isinstance(outcome, _FAILURES):
                    span.set_status(StatusCode.ERROR, type(outcome).__name__)
            return action

    def _outcome(self, delivery: Delivery) -> DeliveryOutcome:
        problem = wire_properties.undecodable(delivery.properties)
        if problem is not None:
            # No client of the queue could read the header table either.
            _log.error("undecodable headers", error=problem)
            return routing.Unreadable(wire_properties.UndecodableHeaders(problem))
        try:
            event = parse_user_registered(delivery.body)
        except InvalidEvent as error:
            _log.error("malformed event", error=str(error))
            return routing.Unreadable(error)
        with event_context(event.event_id, delivery.properties.correlation_id):
            return self._handled(event)

    def _handled(self, event: UserRegistered) -> DeliveryOutcome:
        if not self._breaker.allow_attempt():
            return routing.Paused()
        result = self._handle(event)
        self._metrics.count("retried", result.attempts - 1)
        if result.outcome is Outcome.SENT:
            self._metrics.count("sent")
            self._metrics.observe_delivered(event.occurred_at)
            self._breaker_moved(self._breaker.record_delivered())
            return routing.Done()
        if result.outcome is Outcome.DUPLICATE:
            self._metrics.count("duplicate")
            return routing.Done()
        error = result.error
        assert error is not None
        if isinstance(error, UncertainDelivery):
            self._metrics.count_uncertain_send()
        elif isinstance(error, ServerRefused):
            self._breaker_moved(self._breaker.record_server_refusal(str(error)))
        elif isinstance(error, SmtpRejected):
            self._breaker_moved(
                self._breaker.record_recipient_refusal(event.data.email, str(error))
            )
        return routing.Failed(
            error,
            result.attempts,
            permanent=result.permanent,
            stopping=self._stopping.is_set(),
            breaker_open=self._breaker.is_open,
        )

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
                probe_s=self.router.breaker_probe_s,
            )
        else:
            _log.warning("mail server accepts again: delivery and dead-lettering resumed")


def _consumer_span(delivery: Delivery) -> AbstractContextManager[Span | None]:
    """The CONSUMER span of one delivery, a child of the context its headers carry."""
    if not is_enabled():
        # Tracing off: not even the attributes or the headers' context are worked out.
        return NO_SPAN
    attributes: dict[str, str | int] = {
        **messaging_attributes(
            destination=QUEUE,
            routing_key=delivery.routing_key,
            message_id=delivery.properties.message_id,
            operation="process",
        ),
        "messaging.rabbitmq.message.delivery_tag": delivery.tag,
    }
    correlation_id = delivery.properties.correlation_id
    if isinstance(correlation_id, str):
        attributes["messaging.message.conversation_id"] = correlation_id
    return traced(
        _tracer,
        PROCESS_SPAN,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        parent=extract(delivery.headers),
    )
