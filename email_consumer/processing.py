"""From a delivery to its `Action`, on a pool thread: read the event, ask the breaker, run the
handler, count what happened, and let the router (routing.py) say where the delivery goes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from email_consumer import routing, wire_properties
from email_consumer.breaker import BreakerState, DeadLetterBreaker, Transition
from email_consumer.errors import ServerRefused, SmtpRejected, UncertainDelivery
from email_consumer.handler import HandlingResult, Outcome
from email_consumer.metrics import WorkerMetrics
from email_consumer.routing import Action, Delivery, DeliveryOutcome, Router
from shared.events import InvalidEvent, UserRegistered, parse_user_registered
from shared.logging import event_context, get_logger

_log = get_logger(__name__)

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
        with event_context(delivery.log_id, delivery.properties.correlation_id):
            try:
                return self.router.route(delivery, self._outcome(delivery), now=datetime.now(UTC))
            except Exception as error:  # noqa: BLE001 - a bug must not leave the delivery unsettled
                _log.exception("unexpected error while handling an event")
                return self.router.route(delivery, routing.Crashed(error), now=datetime.now(UTC))

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
