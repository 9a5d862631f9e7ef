"""The worker core's view of the outside world: small ports with one real adapter each.

The adapters live in `smtp_sender.py` and `processed_events.py`; unit tests use fakes.
"""

from __future__ import annotations

import enum
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class RenderedEmail:
    """A message ready for the wire: its SMTP envelope and the bytes sent as they are (a resend
    after an uncertain outcome sends the same bytes and Message-ID)."""

    envelope_from: str  # MAIL FROM: the bare address of MAIL_FROM
    envelope_to: str  # RCPT TO: the user's address, the one in the To header
    # The whole message, CRLF line endings, as the `email` package wrote it; kept out of repr so
    # a logged value never carries the user's name and address.
    data: bytes = field(repr=False)
    message_id: str


class EmailSender(Protocol):
    def reserved(self) -> AbstractContextManager[None]:
        """Hold a connection for this thread; `send` inside the block uses it without waiting.

        The handler takes it before claiming an event, so that the claim's lease only has to
        outlast the send itself, never a wait for a free connection.
        """

    def send(self, email: RenderedEmail) -> None:
        """Hand the email to the mail server; returns once the server accepted it.

        Raises `TransientError` (try again later), `PermanentError` (never will work), or
        `UncertainDelivery` (the message went out but its acceptance was never confirmed).
        """


class ClaimAnswer(enum.Enum):
    """The answer of the processed-events store to "may I send the email for this event?"."""

    CLAIMED = "claimed"  # yes: you hold the event until you mark it sent or release it
    ALREADY_SENT = "already_sent"  # no: its email has been sent before
    HELD_ELSEWHERE = "held_elsewhere"  # not now: another delivery holds a live claim
    # Yes, once more: an earlier send's outcome was uncertain (it may have been accepted), its
    # wait is over, and this is the one resend allowed. You hold the event as with CLAIMED.
    RESEND = "resend"
    # No, never again: the email may have been sent twice already (two uncertain outcomes).
    MAYBE_SENT = "maybe_sent"


class ProcessedEvents(Protocol):
    """The record of events whose email was sent, shared by every worker."""

    def claim(self, event_id: str, token: str, lease_s: float) -> ClaimAnswer:
        """Claim `event_id` under `token` for `lease_s` seconds, unless sent or held."""

    def mark_sent(self, event_id: str, token: str) -> None:
        """Record the event's email as sent: every later claim answers ALREADY_SENT."""

    def release(self, event_id: str, token: str) -> None:
        """Give up a claim after a failed send, so a retry may claim it at once."""

    def release_resend(self, event_id: str, token: str) -> None:
        """Give up a RESEND claim after a send that failed before the message went out: the
        event stays "maybe sent once", and its resend may be claimed again at once."""

    def mark_uncertain(self, event_id: str, token: str, resend_after_s: float) -> bool:
        """Record that the email may have been sent (no reply to the final dot).

        After a CLAIMED send the event may be claimed again (RESEND) in `resend_after_s`
        seconds; after a RESEND it is "maybe sent twice" and every later claim answers
        MAYBE_SENT. Returns True in that second case (no resend is left).
        """
