"""The pure core of the worker: one event in, at most one welcome email out.

No broker, SMTP or database code: the handler talks to an `EmailSender` and a `ProcessedEvents`
store through their ports and leaves acknowledging to the caller. The claim is one atomic write
with a lease: of two deliveries of one event at the same moment one sends, the other sees
HELD_ELSEWHERE and looks again later; a worker that died mid-send frees the event when the lease
runs out. Claim and send are retried together; marking the event sent is retried on its own,
after the send, so a store blip then cannot lead to a second email. An uncertain send (no reply
to the final dot) is recorded "maybe sent" and resent once, no sooner than
`uncertain_resend_after_s`, with the same bytes and Message-ID (`ClaimAnswer.RESEND`); if that
is uncertain too, never again (`ClaimAnswer.MAYBE_SENT`).
"""

from __future__ import annotations

import enum
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from opentelemetry.trace import SpanKind

from email_consumer.errors import EventBusy, UncertainDelivery
from email_consumer.ports import ClaimAnswer, EmailSender, ProcessedEvents, RenderedEmail
from email_consumer.rendering import WelcomeRenderer
from email_consumer.retry_policy import RetryPolicy
from shared.backoff import log_retry
from shared.errors import PermanentError, ServiceError
from shared.events import UserRegistered
from shared.logging import get_logger
from shared.tracing import get_tracer, traced

CLAIM_SPAN: Final = "claim event"
SEND_SPAN: Final = "send email"
_log = get_logger(__name__)
_tracer = get_tracer(__name__)


class Outcome(enum.Enum):
    SENT = "sent"
    DUPLICATE = "duplicate"
    FAILED = "failed"


@dataclass(frozen=True)
class HandlingResult:
    outcome: Outcome
    attempts: int
    error: ServiceError | None = None

    @property
    def permanent(self) -> bool:
        return isinstance(self.error, PermanentError)


class WelcomeEmailHandler:
    """Sends the welcome email of an event once, retrying transient failures in process."""

    def __init__(
        self,
        *,
        renderer: WelcomeRenderer,
        sender: EmailSender,
        processed: ProcessedEvents,
        policy: RetryPolicy,
        claim_lease_s: float,
        uncertain_resend_after_s: float = 300.0,
        stopping: threading.Event | None = None,
        new_token: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._renderer = renderer
        self._sender = sender
        self._processed = processed
        self._new_token = new_token
        self._claim_lease_s = claim_lease_s
        self._uncertain_resend_after_s = uncertain_resend_after_s
        # One controller serves every pool thread: tenacity keeps each run's state per thread.
        log = log_retry(_log, "transient failure, retrying in process")
        self._retrying_send = policy.in_process(before_sleep=log, stopping=stopping)
        self._retrying_record = policy.in_process(before_sleep=log, max_total_s=claim_lease_s / 2)

    def handle(self, event: UserRegistered) -> HandlingResult:
        """Send the email unless already sent; failures are returned, never raised."""
        attempts = 0
        token: str | None = None
        try:
            email = self._renderer.render(event)
            for attempt in self._retrying_send:
                with attempt:
                    attempts += 1
                    token = self._claim_and_send(event, email)
        except ServiceError as error:
            return HandlingResult(Outcome.FAILED, max(attempts, 1), error)
        if token is None:
            return HandlingResult(Outcome.DUPLICATE, attempts)
        # The email went out: from here on nothing may claim or send again in this handling,
        # whatever the store says. A retry of the loop above would find our own claim
        # (HELD_ELSEWHERE) and, once the lease ran out, send a second email.
        self._record_sent(event.event_id, token)
        return HandlingResult(Outcome.SENT, attempts)

    def _claim_and_send(self, event: UserRegistered, email: RenderedEmail) -> str | None:
        """The claim token once the email was sent; None when it had been sent before."""
        token = self._new_token()
        with self._sender.reserved():
            with traced(_tracer, CLAIM_SPAN) as span:
                claim = self._processed.claim(event.event_id, token, self._claim_lease_s)
                if span is not None:
                    span.set_attribute("email_consumer.claim", claim.value)
            if claim is ClaimAnswer.ALREADY_SENT:
                _log.info("email already sent for this event; not sending again")
                return None
            if claim is ClaimAnswer.MAYBE_SENT:
                _log.warning(
                    "email may have been sent twice already (two uncertain outcomes); "
                    "not sending it again"
                )
                return None
            if claim is ClaimAnswer.HELD_ELSEWHERE:
                raise EventBusy("another delivery of this event is being processed")
            resend = claim is ClaimAnswer.RESEND
            if resend:
                _log.warning("resending once: an earlier send's outcome was uncertain")
            try:
                with traced(_tracer, SEND_SPAN, kind=SpanKind.CLIENT):
                    self._sender.send(email)
            except UncertainDelivery as error:
                final = self._mark_uncertain(event.event_id, token)
                raise UncertainDelivery(str(error), final=final) from None
            except BaseException:
                if resend:
                    self._release_resend_quietly(event.event_id, token)
                else:
                    self._release_quietly(event.event_id, token)
                raise
        _log.info("welcome email sent")
        return token

    def _mark_uncertain(self, event_id: str, token: str) -> bool:
        """Record "maybe sent"; whether no resend is left (True also when the store is down:
        then the claim runs out after its lease, and a resend must not be scheduled on top)."""
        try:
            for attempt in self._retrying_record:
                with attempt:
                    final = self._processed.mark_uncertain(
                        event_id, token, self._uncertain_resend_after_s
                    )
        except ServiceError as error:
            _log.error(
                "email may have been sent, and could not be recorded so",
                error_type=type(error).__name__,
                error=str(error),
            )
            return True
        if final:
            _log.warning(
                "email may have been sent twice (the resend's outcome is uncertain too); "
                "it will not be sent again"
            )
        else:
            _log.warning(
                "email may have been sent (no reply to the final dot); one resend, "
                "with the same Message-ID, no sooner than resend_after_s",
                resend_after_s=self._uncertain_resend_after_s,
            )
        return final

    def _record_sent(self, event_id: str, token: str) -> None:
        """Mark the event sent, retrying a store blip well inside the claim's lease.

        If the store stays down, the delivery is still acknowledged (the email went out); the
        claim then runs out after its lease and only a redelivery of the same event could send
        a second email, the one window left for a duplicate (at-least-once).
        """
        try:
            for attempt in self._retrying_record:
                with attempt:
                    self._processed.mark_sent(event_id, token)
        except ServiceError as error:
            _log.error(
                "email sent but not recorded as sent; acknowledging anyway",
                error_type=type(error).__name__,
                error=str(error),
            )

    def _release_resend_quietly(self, event_id: str, token: str) -> None:
        try:
            self._processed.release_resend(event_id, token)
        except ServiceError as error:
            # The resend's claim runs out after its lease; the event then counts as "maybe sent
            # twice" (never sent again), the safe side of the choice.
            _log.warning("could not release the resend claim", error_type=type(error).__name__)

    def _release_quietly(self, event_id: str, token: str) -> None:
        try:
            self._processed.release(event_id, token)
        except ServiceError as error:
            # The claim then simply runs out after its lease; the send error matters more.
            _log.warning("could not release claim", error_type=type(error).__name__)
