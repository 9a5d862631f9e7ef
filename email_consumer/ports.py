"""The worker core's view of the outside world: small ports with one real adapter each.

The adapters live in `smtp_sender.py` and `processed_events.py`; unit tests use fakes.
"""

from __future__ import annotations

import enum
from email.message import EmailMessage
from typing import Protocol


class EmailSender(Protocol):
    def send(self, message: EmailMessage) -> None:
        """Hand the message to the mail server; returns once the server accepted it.

        Raises `TransientError` (try again later) or `PermanentError` (never will work).
        """


class Claim(enum.Enum):
    """The answer of the processed-events store to "may I send the email for this event?"."""

    CLAIMED = "claimed"  # yes: you hold the event until you mark it sent or release it
    ALREADY_SENT = "already_sent"  # no: its email has been sent before
    HELD_ELSEWHERE = "held_elsewhere"  # not now: another delivery holds a live claim


class ProcessedEvents(Protocol):
    """The record of events whose email was sent, shared by every worker."""

    def claim(self, event_id: str, token: str, lease_s: float) -> Claim:
        """Claim `event_id` under `token` for `lease_s` seconds, unless sent or held."""

    def mark_sent(self, event_id: str, token: str) -> None:
        """Record the event's email as sent: every later claim answers ALREADY_SENT."""

    def release(self, event_id: str, token: str) -> None:
        """Give up a claim after a failed send, so a retry may claim it at once."""
