"""The smtplib adapter of the `EmailSender` port.

One SMTP connection per worker thread, opened on first use and reused for the next emails
(smtplib objects are not thread-safe, and a fresh TCP + TLS + login per email is slow). A broken
or stale connection is dropped and reopened: one idle for a few seconds is checked with NOOP
before use (servers close idle sessions), and one that breaks under a send is reopened once and
the send tried again on the fresh one. A NOOP before every email would cost a round trip each.
The email arrives already serialised (`RenderedEmail`) and goes out as those very bytes.

Every smtplib and socket error is wrapped at this edge, and the edge tells two phases apart:

* Opening the session (connect, greeting, EHLO, STARTTLS, AUTH): whatever fails there fails for
  every message alike, so it is never a verdict on this message. Connection errors and timeouts
  become `SmtpUnavailable`, refusals (a 554 greeting, AUTH 535, STARTTLS missing) become
  `SmtpSessionRefused`, both transient, so a misconfiguration parks events in the retry queues
  instead of dead-lettering the whole queue. Refusals are logged as configuration problems.
* Sending this message (MAIL, RCPT, DATA): 4xx replies are transient, 5xx permanent.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
from collections.abc import Callable

from email_consumer.errors import (
    SmtpRejected,
    SmtpSessionRefused,
    SmtpTemporarilyRefused,
    SmtpUnavailable,
    UndeliverableMessage,
)
from email_consumer.ports import RenderedEmail
from email_consumer.settings import SmtpSettings
from shared.logging import get_logger

_log = get_logger(__name__)

# After this long unused, a connection is checked with NOOP before the next email. Servers drop
# idle sessions after tens of seconds or more, so a busy worker skips the round trip.
IDLE_CHECK_AFTER_S = 5.0


class SmtpEmailSender:
    """Sends messages with smtplib, wrapping failures into the worker's error classes."""

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        idle_check_after_s: float = IDLE_CHECK_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._idle_check_after_s = idle_check_after_s
        self._clock = clock
        # Per thread: `connection` (or None) and `last_used`, the clock when it last answered.
        self._local = threading.local()
        # Every thread's open connection, so `close_all` can say QUIT to each at shutdown.
        self._open_connections: set[smtplib.SMTP] = set()
        self._registry_lock = threading.Lock()

    def send(self, email: RenderedEmail) -> None:
        previous = getattr(self._local, "connection", None)
        connection = self._session()
        try:
            try:
                self._transmit(connection, email)
            except (smtplib.SMTPServerDisconnected, ConnectionError):
                if connection is not previous:
                    raise  # a fresh connection broke: the server is in trouble, not the session
                # A reused connection the server had closed (idle timeout, restart) fails at its
                # first command, before the message went out, so one fresh connection retries.
                # Breaking later, mid-message, is the at-least-once case any retry has.
                self._discard()
                self._transmit(self._session(), email)
        except smtplib.SMTPRecipientsRefused as error:
            self._discard()
            code, text = _first_reply(error.recipients)
            raise _reply_error(code, text) from None
        except smtplib.SMTPResponseException as error:
            self._discard()
            raise _reply_error(error.smtp_code, _decode(error.smtp_error)) from None
        except smtplib.SMTPNotSupportedError as error:
            # Raised here only for what this message needs (SMTPUTF8 for a non-ASCII address).
            self._discard()
            raise UndeliverableMessage(f"mail server cannot carry this message: {error}") from None
        except (smtplib.SMTPException, OSError) as error:
            # OSError covers refused and reset connections and socket timeouts.
            self._discard()
            raise SmtpUnavailable(_describe(error, self._settings)) from None

    def _transmit(self, connection: smtplib.SMTP, email: RenderedEmail) -> None:
        # SMTPUTF8 only when an address needs it; `mail` raises SMTPNotSupportedError if the
        # server lacks it (as `send_message` did), which `send` maps to UndeliverableMessage.
        international = not (email.envelope_from.isascii() and email.envelope_to.isascii())
        connection.sendmail(
            email.envelope_from,
            [email.envelope_to],
            email.data,
            mail_options=["SMTPUTF8"] if international else [],
        )
        self._local.last_used = self._clock()

    def close(self) -> None:
        """Close this thread's connection, if any."""
        connection: smtplib.SMTP | None = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            self._forget(connection)
            _quit_quietly(connection)

    def close_all(self) -> None:
        """Say QUIT on every thread's connection; for shutdown, once the pool is idle."""
        with self._registry_lock:
            connections = list(self._open_connections)
            self._open_connections.clear()
        for connection in connections:
            _quit_quietly(connection)

    def _session(self) -> smtplib.SMTP:
        settings = self._settings
        try:
            return self._connection()
        except (smtplib.SMTPResponseException, smtplib.SMTPNotSupportedError) as error:
            detail = _session_detail(error)
            _log.error(
                "SMTP session refused: check SMTP_HOST, SMTP_PORT, SMTP_USERNAME, SMTP_PASSWORD "
                "and SMTP_STARTTLS; events wait in the retry queues meanwhile",
                host=settings.host,
                port=settings.port,
                error=detail,
            )
            raise SmtpSessionRefused(
                f"mail server {settings.host}:{settings.port} refused the session: {detail}"
            ) from None
        except (smtplib.SMTPException, OSError) as error:
            if isinstance(error, ssl.SSLError):
                _log.error(
                    "SMTP TLS failed: check SMTP_HOST and the server's certificate",
                    host=settings.host,
                    port=settings.port,
                    error=str(error),
                )
            raise SmtpUnavailable(_describe(error, settings)) from None

    def _connection(self) -> smtplib.SMTP:
        connection: smtplib.SMTP | None = getattr(self._local, "connection", None)
        if connection is not None:
            if self._clock() - self._local.last_used < self._idle_check_after_s:
                return connection
            try:
                # Idle a while: the server may have closed it; finding out now is cheaper than
                # failing mid-message.
                code, _ = connection.noop()
                if code == 250:
                    self._local.last_used = self._clock()
                    return connection
            except (smtplib.SMTPException, OSError):
                pass
            self._discard()
        connection = self._open()
        self._local.connection = connection
        self._local.last_used = self._clock()
        with self._registry_lock:
            self._open_connections.add(connection)
        return connection

    def _open(self) -> smtplib.SMTP:
        settings = self._settings
        connection = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s)
        try:
            if settings.starttls:
                # The default context verifies the certificate and the host name.
                connection.starttls(context=ssl.create_default_context())
            if settings.username:
                connection.login(settings.username, settings.password)
        except BaseException:
            connection.close()
            raise
        _log.debug("smtp connected", host=settings.host, port=settings.port)
        return connection

    def _discard(self) -> None:
        connection: smtplib.SMTP | None = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            self._forget(connection)
            connection.close()

    def _forget(self, connection: smtplib.SMTP) -> None:
        with self._registry_lock:
            self._open_connections.discard(connection)


def _quit_quietly(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()


def _reply_error(code: int, text: str) -> SmtpRejected | SmtpTemporarilyRefused:
    if 400 <= code < 500:
        return SmtpTemporarilyRefused(code, text)
    if code >= 500:
        return SmtpRejected(code, text)
    # smtplib uses -1 for "no valid reply": the session broke, a transient condition.
    return SmtpTemporarilyRefused(code, text or "no valid reply from the mail server")


def _first_reply(recipients: dict[str, tuple[int, bytes]]) -> tuple[int, str]:
    for code, text in recipients.values():
        return code, _decode(text)
    return -1, "recipient refused"


def _decode(text: bytes | str) -> str:
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def _session_detail(error: smtplib.SMTPException) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        return f"SMTP {error.smtp_code}: {_decode(error.smtp_error)}"
    return f"{type(error).__name__}: {error}"


def _describe(error: BaseException, settings: SmtpSettings) -> str:
    detail = str(error) or type(error).__name__
    where = f"{settings.host}:{settings.port}"
    return f"mail server {where} unavailable: {type(error).__name__}: {detail}"
