"""The smtplib adapter of the `EmailSender` port.

One SMTP connection per worker thread, opened on first use and reused for the next emails
(smtplib objects are not thread-safe, and a fresh TCP + TLS + login per email is slow). A broken
or stale connection is dropped and reopened. Every smtplib and socket error is wrapped at this
edge: 4xx replies, connection errors and timeouts become transient, 5xx replies permanent.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
from email.message import EmailMessage

from email_consumer.errors import (
    SmtpMisconfigured,
    SmtpRejected,
    SmtpTemporarilyRefused,
    SmtpUnavailable,
)
from email_consumer.settings import SmtpSettings
from shared.logging import get_logger

_log = get_logger(__name__)


class SmtpEmailSender:
    """Sends messages with smtplib, wrapping failures into the worker's error classes."""

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings
        self._local = threading.local()

    def send(self, message: EmailMessage) -> None:
        try:
            connection = self._connection()
            connection.send_message(message)
        except smtplib.SMTPRecipientsRefused as error:
            self._discard()
            code, text = _first_reply(error.recipients)
            raise _reply_error(code, text) from None
        except smtplib.SMTPResponseException as error:
            self._discard()
            raise _reply_error(error.smtp_code, _decode(error.smtp_error)) from None
        except smtplib.SMTPNotSupportedError as error:
            self._discard()
            raise SmtpMisconfigured(f"mail server lacks a required extension: {error}") from None
        except (smtplib.SMTPException, OSError) as error:
            # OSError covers refused and reset connections, socket timeouts and TLS errors.
            self._discard()
            raise SmtpUnavailable(_describe(error, self._settings)) from None

    def close(self) -> None:
        """Close this thread's connection, if any."""
        connection: smtplib.SMTP | None = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            try:
                connection.quit()
            except (smtplib.SMTPException, OSError):
                connection.close()

    def _connection(self) -> smtplib.SMTP:
        connection: smtplib.SMTP | None = getattr(self._local, "connection", None)
        if connection is not None:
            try:
                # Servers close idle sessions; finding out now avoids failing mid-message.
                code, _ = connection.noop()
                if code == 250:
                    return connection
            except (smtplib.SMTPException, OSError):
                pass
            self._discard()
        connection = self._open()
        self._local.connection = connection
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


def _describe(error: BaseException, settings: SmtpSettings) -> str:
    detail = str(error) or type(error).__name__
    where = f"{settings.host}:{settings.port}"
    return f"mail server {where} unavailable: {type(error).__name__}: {detail}"
