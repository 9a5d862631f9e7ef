"""Where a delivery goes once its outcome is known: acknowledged, moved, or handed back.

Pure: no broker and no clock (the caller passes `now`). The worker turns the `Action` into pika
calls; the retry policy picks the retry queue or the dead-letter reason; this module applies it
to each kind of outcome and writes the headers the moved copy carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from email_consumer import failure_headers
from email_consumer.errors import (
    DeliveryPaused,
    EventBusy,
    ServerRefused,
    SmtpRejected,
    UncertainDelivery,
)
from email_consumer.retry_policy import MALFORMED, DeadLetter, Decision, RetryLater, RetryPolicy
from shared import topology

if TYPE_CHECKING:  # the type only: routing reads the properties, never the wire
    from pika.spec import BasicProperties


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as the broker handed it to this worker."""

    tag: int
    routing_key: str
    properties: BasicProperties
    body: bytes
    received_s: float  # time.monotonic() when it arrived

    @property
    def headers(self) -> Mapping[str, Any]:
        return self.properties.headers or {}

    @property
    def log_id(self) -> str:
        """The message id for log lines: printable and short, since the sender chose it."""
        value = self.properties.message_id
        if not isinstance(value, str) or not value:
            return "unknown"
        return "".join(c if c.isprintable() else "?" for c in value[:64])


@dataclass(frozen=True, slots=True)
class Done:
    """The email was sent now or before (a duplicate)."""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """No worker could read it: undecodable headers, not JSON, not the event's schema."""

    error: Exception


@dataclass(frozen=True, slots=True)
class Paused:
    """The breaker is open: the event was not tried."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The handler gave up on the event (its in-process retries are spent)."""

    error: BaseException
    attempts: int
    permanent: bool = False
    stopping: bool = False  # the worker was shutting down
    breaker_open: bool = False  # once this failure was counted by the breaker


@dataclass(frozen=True, slots=True)
class Crashed:
    """The worker itself raised (a bug): retried through the broker, never handed back at once."""

    error: BaseException


DeliveryOutcome = Done | Unreadable | Paused | Failed | Crashed


@dataclass(frozen=True, slots=True)
class Forward:
    """Publish a copy with `headers`, then acknowledge the original once it is confirmed."""

    exchange: str
    routing_key: str
    headers: dict[str, Any]
    counted_as: Literal["delayed", "dead_lettered"]


@dataclass(frozen=True, slots=True)
class Ack:
    """Acknowledge the delivery."""


@dataclass(frozen=True, slots=True)
class HandBack:
    """Return the delivery to the queue untouched (shutting down mid-retry)."""


Action = Forward | Ack | HandBack


@dataclass(frozen=True, slots=True)
class Router:
    """The retry policy applied to each kind of outcome."""

    policy: RetryPolicy
    host: str  # written into the copies (`worker-host`)
    breaker_probe_s: float  # how long an event waits while the mail server refuses everyone
    uncertain_resend_after_s: float

    def route(self, delivery: Delivery, outcome: DeliveryOutcome, *, now: datetime) -> Action:
        if isinstance(outcome, Done):
            return Ack()
        if isinstance(outcome, Unreadable):
            return self._move(delivery, outcome.error, 1, DeadLetter(MALFORMED), now)
        if isinstance(outcome, Paused):
            paused = DeliveryPaused("the mail server refuses every message; waiting for it")
            return self._move(delivery, paused, 0, self._park(), now)
        if isinstance(outcome, Crashed):
            retry = self._retry(delivery, outcome.error, permanent=False)
            return self._move(delivery, outcome.error, 1, retry, now)
        return self._after_failure(delivery, outcome, now)

    def _after_failure(self, delivery: Delivery, failed: Failed, now: datetime) -> Action:
        error = failed.error
        decision: Decision
        if isinstance(error, UncertainDelivery):
            # Never back to the queue at once, even when stopping: that would resend at once.
            decision = self.policy.after_uncertain(
                final=error.final, resend_after_s=self.uncertain_resend_after_s
            )
        elif isinstance(error, ServerRefused) or (
            isinstance(error, SmtpRejected) and failed.breaker_open
        ):
            decision = self._park()  # a refusal of the server never uses up a retry
        elif failed.stopping and not failed.permanent:
            return HandBack()
        else:
            decision = self._retry(delivery, error, permanent=failed.permanent)
        return self._move(delivery, error, failed.attempts, decision, now)

    def _park(self) -> Decision:
        """Wait in a retry queue for the breaker's next probe, using up no retry."""
        return self.policy.park(at_least_s=self.breaker_probe_s)

    def _retry(self, delivery: Delivery, error: BaseException, *, permanent: bool) -> Decision:
        return self.policy.after_failure(
            permanent=permanent,
            broker_retries_done=failure_headers.as_int(
                delivery.headers, failure_headers.RETRY_COUNT
            ),
            busy=isinstance(error, EventBusy),
        )

    def _move(
        self,
        delivery: Delivery,
        error: BaseException,
        attempts: int,
        decision: Decision,
        now: datetime,
    ) -> Forward:
        """The copy `decision` sends to a retry queue or the DLQ, with the failure's headers."""
        retry = decision if isinstance(decision, RetryLater) else None
        headers = failure_headers.after_failure(
            delivery.properties.headers,
            error=error,
            attempts=attempts,
            now=now,
            host=self.host,
            routing_key=delivery.routing_key,
            dead_letter_reason=decision.reason if isinstance(decision, DeadLetter) else None,
            delayed_retry=retry is not None and retry.counts_as_retry,
        )
        if retry is None:
            return Forward(
                topology.DEAD_LETTER_EXCHANGE, topology.DEAD_LETTER_QUEUE, headers, "dead_lettered"
            )
        return Forward(
            topology.RETRY_EXCHANGE, topology.retry_queue_name(retry.delay_s), headers, "delayed"
        )
