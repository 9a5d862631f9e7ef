"""The worker's own errors, on top of `shared.errors`, named after what the worker does next.

smtplib and socket exceptions are wrapped into these at the edge (`smtp_sender.py`, which
classifies them by SMTP stage and reply code in `smtp_replies.py`), so the handler and the
retry policy only ever see "transient", "permanent", or the third case an SMTP client has to
face: `UncertainDelivery`, where the message may have been accepted.
"""

from __future__ import annotations

from shared.errors import PermanentError, ServiceError, TransientError


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


class ServerRefused(TransientError):
    """The mail server refuses every message alike (the session, the login, the sender): a
    problem of the server or of our configuration, never of this event's recipient.

    Transient, and never dead-letters: the worker opens its breaker (`breaker.py`) and parks
    events in the retry queues, without using up their retries, until the server accepts again.
    """


class SmtpSessionRefused(ServerRefused):
    """The SMTP session could not be opened: greeting refused, STARTTLS missing or failed,
    login refused, or a required extension missing.

    Transient on purpose, although it is usually a configuration problem (a wrong
    SMTP_PASSWORD, STARTTLS against a server without it): it concerns every message alike, so
    dead-lettering each event in turn would empty the whole queue into the DLQ. Retried instead,
    in process and then through the retry queues, until an operator fixes the configuration.
    """


class SmtpSenderRefused(ServerRefused):
    """The mail server refused the transaction itself with 5xx (MAIL FROM, DATA, or an
    authentication reply such as 530 to RCPT TO): it would refuse any recipient alike."""

    def __init__(self, code: int, text: str, stage: str) -> None:
        super().__init__(f"SMTP {code} to {stage}: {text}")
        self.code = code
        self.text = text


class UncertainDelivery(ServiceError):
    """The message and its final dot went out, but the server's reply never came (timeout,
    dropped connection, garbled reply): the server may have accepted it.

    Neither transient nor permanent: it is never retried at once (in process, or on another
    connection), since that would send a second copy of a message that may be delivered. The
    handler records the event as "maybe sent" and the worker parks it for one resend, after
    WORKER_UNCERTAIN_RESEND_AFTER_S; `final` marks the outcome of that one resend, after which
    the event is never sent again (it goes to the DLQ, saying so).
    """

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


class DeliveryPaused(TransientError):
    """The breaker is open (the mail server refused every recent message): this event waits in
    a retry queue without being tried, and without using up one of its retries."""


class UndeliverableMessage(PermanentError):
    """The welcome email cannot be built or encoded for this event (for example an address
    the SMTP envelope cannot carry)."""


class EventBusy(TransientError):
    """Another delivery of the same event holds the claim right now; look again shortly."""


class StoreUnavailable(TransientError):
    """The processed-events database could not be reached or refused the operation."""
