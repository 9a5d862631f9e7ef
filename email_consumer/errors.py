"""The worker's own errors, on top of `shared.errors`, named after what the worker does next.

smtplib and socket exceptions are wrapped into these at the edge (`smtp_sender.py`), so the
handler and the retry policy only ever see "transient" or "permanent".
"""

from __future__ import annotations

from shared.errors import PermanentError, TransientError


class SmtpRejected(PermanentError):
    """The mail server refused the message for good (5xx): retrying cannot help."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"SMTP {code}: {text}")
        self.code = code
        self.text = text


class SmtpTemporarilyRefused(TransientError):
    """The mail server answered 4xx: it may accept the same message later."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"SMTP {code}: {text}")
        self.code = code
        self.text = text


class SmtpUnavailable(TransientError):
    """The mail server could not be reached, dropped the connection or timed out."""


class SmtpSessionRefused(TransientError):
    """The SMTP session could not be opened: greeting refused, STARTTLS missing or failed,
    login refused, or a required extension missing.

    Transient on purpose, although it is usually a configuration problem (a wrong
    SMTP_PASSWORD, STARTTLS against a server without it): it concerns every message alike, so
    dead-lettering each event in turn would empty the whole queue into the DLQ. Retried instead,
    in process and then through the retry queues, until an operator fixes the configuration.
    """


class UndeliverableMessage(PermanentError):
    """The welcome email cannot be built or encoded for this event (for example an address
    the SMTP envelope cannot carry)."""


class EventBusy(TransientError):
    """Another delivery of the same event holds the claim right now; look again shortly."""


class StoreUnavailable(TransientError):
    """The processed-events database could not be reached or refused the operation."""
