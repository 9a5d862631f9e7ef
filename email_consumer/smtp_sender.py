"""The smtplib adapter of the `EmailSender` port: a pool of SMTP connections, one send each.

At most `max_connections` (WORKER_CONCURRENCY) sessions are shared by the worker's threads, so
the mail server sees a fixed number however many threads prepare emails, and no email pays for a
fresh TCP + TLS + login. The handler takes a slot (`reserved`) before it claims an event, so a
claim's lease never covers a wait for a connection. A stale connection is dropped and reopened.

The transaction is driven stage by stage (MAIL, RCPT, DATA, the message, the reply to its final
dot) rather than through `sendmail`, so every failure is known by its stage (`smtp_replies.py`
says what it means). A server that offers PIPELINING (RFC 2920; real MTAs and relays do) gets
MAIL, RCPT and DATA in one write: two round trips per email instead of four, the replies still
read and judged stage by stage. Only the reply to the final dot waits SMTP_FINAL_REPLY_TIMEOUT_S:
before it nothing can have been delivered, and a short timeout costs a retry; without it the outcome
is uncertain (`UncertainDelivery`), and the message is never resent here. Whatever fails while
the session opens fails for every message alike, so it is transient, never a verdict on one.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from email_consumer import mime_writer
from email_consumer.errors import (
    SmtpSessionRefused,
    SmtpUnavailable,
    UndeliverableMessage,
)
from email_consumer.ports import RenderedEmail
from email_consumer.settings import SmtpSettings
from email_consumer.smtp_replies import Stage, no_reply, reply_error
from shared.logging import get_logger

_log = get_logger(__name__)
_T = TypeVar("_T")
_LEADING_DOT = re.compile(rb"(?m)^\.")

# After this long unused, a connection is checked with NOOP before the next email. Servers drop
# idle sessions after tens of seconds or more, so a busy worker skips the round trip.
IDLE_CHECK_AFTER_S = 5.0


class _ConnectionLost(Exception):
    """The connection broke (or timed out) before `stage` had its reply; internal to this module."""

    def __init__(self, stage: Stage, error: BaseException) -> None:
        super().__init__(str(error))
        self.stage = stage
        self.error = error


@dataclass(slots=True)
class _Pooled:
    connection: smtplib.SMTP
    last_used: float
    """The clock when the server last answered on it."""


class SmtpEmailSender:
    """Sends messages with smtplib, wrapping failures into the worker's error classes."""

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        max_connections: int = 1,
        idle_check_after_s: float = IDLE_CHECK_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._idle_check_after_s = idle_check_after_s
        self._clock = clock
        self._slots = threading.BoundedSemaphore(max_connections)
        self._local = threading.local()  # `reserved`: whether this thread holds a slot
        self._lock = threading.Lock()
        # Idle connections, the most recently used last: it is taken first, being the least
        # likely to have been dropped by the server.
        self._idle: list[_Pooled] = []
        # Every open connection, idle or in use, for `open_connections`.
        self._open: set[smtplib.SMTP] = set()
        self._closed = False  # set by `close_all`: a connection whose send ends is not kept
        self.connections_opened = 0
        """How many connections this sender has opened in all (for tests and diagnostics)."""

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    @contextlib.contextmanager
    def reserved(self) -> Iterator[None]:
        """Take one of the `max_connections` slots for this thread until the block ends."""
        if getattr(self._local, "reserved", False):
            yield  # already held further up this thread's stack
            return
        with self._slots:
            self._local.reserved = True
            try:
                yield
            finally:
                self._local.reserved = False

    def send(self, email: RenderedEmail) -> None:
        with self.reserved():
            pooled = self._take_idle()
            reused = pooled is not None
            if pooled is None:
                pooled = _Pooled(self._session(), self._clock())
            try:
                self._send_on(pooled, email, reused=reused)
            except BaseException:
                self._discard(pooled.connection)
                raise
            pooled.last_used = self._clock()
            with self._lock:
                keep = not self._closed
                if keep:
                    self._idle.append(pooled)
                else:
                    self._open.discard(pooled.connection)
            if not keep:
                _quit_quietly(pooled.connection)

    def _send_on(self, pooled: _Pooled, email: RenderedEmail, *, reused: bool) -> None:
        """Transmit on `pooled` (replacing its connection once if a reused one was dropped)."""
        try:
            try:
                self._transmit(pooled.connection, email)
            except _ConnectionLost as lost:
                if not reused or lost.stage is not Stage.MAIL:
                    raise
                # A reused connection the server had closed (idle timeout, restart) fails at its
                # first command, before anything of the message went out, so one fresh
                # connection retries. Breaking at any later stage is not retried here: after the
                # final dot the message may have been accepted (`UncertainDelivery`).
                self._discard(pooled.connection)
                pooled.connection = self._session()
                self._transmit(pooled.connection, email)
        except _ConnectionLost as lost:
            raise no_reply(lost.stage, _describe(lost.error, self._settings)) from None
        except smtplib.SMTPNotSupportedError as error:
            # Raised here only for what this message needs (SMTPUTF8 for a non-ASCII address).
            raise UndeliverableMessage(f"mail server cannot carry this message: {error}") from None
        except smtplib.SMTPException as error:
            # Nothing else is raised by the stages above (their replies are codes, their broken
            # connections `_ConnectionLost`); kept so no smtplib error escapes this edge.
            raise SmtpUnavailable(_describe(error, self._settings)) from None

    def _transmit(self, connection: smtplib.SMTP, email: RenderedEmail) -> None:
        """One SMTP transaction; raises the classified error of a failed stage."""
        if connection.has_extn("pipelining") and _plain_envelope(email):
            _envelope_pipelined(connection, email)
        else:
            _envelope_stage_by_stage(connection, email)
        # Until every byte of the data block, final dot included, is written, the server cannot
        # hold the message: a failure here is an ordinary transient one.
        _command(Stage.DATA, lambda: connection.send(_data_block(email.data)))
        code, reply = self._final_reply(connection)
        if not 200 <= code < 300:
            raise reply_error(Stage.CONTENT, code, _decode(reply))

    def _final_reply(self, connection: smtplib.SMTP) -> tuple[int, bytes]:
        """The reply to the final dot, waited for up to SMTP_FINAL_REPLY_TIMEOUT_S."""
        sock = connection.sock
        if sock is None:
            raise _ConnectionLost(Stage.CONTENT, smtplib.SMTPServerDisconnected("not connected"))
        sock.settimeout(self._settings.final_reply_timeout_s)
        try:
            return _command(Stage.CONTENT, connection.getreply)
        finally:
            if connection.sock is not None:
                connection.sock.settimeout(self._settings.timeout_s)

    def close_all(self) -> None:
        """For shutdown: say QUIT on every idle connection now, and on each connection still in
        use when its transaction ends (by the thread using it, so none is ever kept again).

        A connection in use is left alone: smtplib is not thread-safe, and a QUIT from here
        would read the reply meant for the transaction and drop the session under it, after
        the server may have accepted the message (the worker stops with sends still running
        once its shutdown timeout passes).
        """
        with self._lock:
            self._closed = True
            idle = [pooled.connection for pooled in self._idle]
            self._idle.clear()
            self._open.difference_update(idle)
        for connection in idle:
            _quit_quietly(connection)

    def _take_idle(self) -> _Pooled | None:
        """An idle connection fit for use (checked with NOOP when idle a while), or None."""
        with self._lock:
            pooled = self._idle.pop() if self._idle else None
        if pooled is None or self._clock() - pooled.last_used < self._idle_check_after_s:
            return pooled
        try:
            # Idle a while: the server may have closed it; finding out now is cheaper than
            # failing mid-message.
            code, _ = pooled.connection.noop()
            if code == 250:
                pooled.last_used = self._clock()
                return pooled
        except (smtplib.SMTPException, OSError):
            pass
        self._discard(pooled.connection)
        return None

    def _session(self) -> smtplib.SMTP:
        settings = self._settings
        try:
            connection = self._open_connection()
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
        with self._lock:
            self._open.add(connection)
            self.connections_opened += 1
        return connection

    def _open_connection(self) -> smtplib.SMTP:
        settings = self._settings
        connection = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s)
        try:
            if settings.starttls:
                # The default context verifies the certificate and the host name.
                connection.starttls(context=ssl.create_default_context())
            if settings.username:
                connection.login(settings.username, settings.password)
            # EHLO (again after STARTTLS) here, so its refusal counts as the session's.
            connection.ehlo_or_helo_if_needed()
        except BaseException:
            connection.close()
            raise
        _log.debug("smtp connected", host=settings.host, port=settings.port)
        return connection

    def _discard(self, connection: smtplib.SMTP) -> None:
        with self._lock:
            self._open.discard(connection)
        connection.close()


def _quit_quietly(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()


def _command(stage: Stage, call: Callable[[], _T]) -> _T:
    """Run one SMTP operation; a broken or timed-out connection becomes `_ConnectionLost`."""
    try:
        return call()
    except (smtplib.SMTPServerDisconnected, OSError) as error:
        # smtplib reports a socket timeout or reset while reading a reply as "disconnected".
        raise _ConnectionLost(stage, error) from None


def _envelope_stage_by_stage(connection: smtplib.SMTP, email: RenderedEmail) -> None:
    """MAIL, RCPT and DATA, each waiting for its reply: three round trips."""
    # SMTPUTF8 only when an address needs it; `mail` raises SMTPNotSupportedError if the
    # server lacks it, which `_send_on` maps to UndeliverableMessage.
    international = not (email.envelope_from.isascii() and email.envelope_to.isascii())
    options = ["SMTPUTF8"] if international else []
    code, reply = _command(Stage.MAIL, lambda: connection.mail(email.envelope_from, options))
    _expect(Stage.MAIL, code, reply)
    code, reply = _command(Stage.RCPT, lambda: connection.rcpt(email.envelope_to))
    _expect(Stage.RCPT, code, reply)
    code, reply = _command(Stage.DATA, lambda: connection.docmd("data"))
    _expect(Stage.DATA, code, reply)


def _envelope_pipelined(connection: smtplib.SMTP, email: RenderedEmail) -> None:
    """MAIL, RCPT and DATA in one write, their replies read in order (RFC 2920): one round trip.

    The first reply that is not a success decides, as it would have stage by stage; the
    commands after it were refused by the server in turn (503), and the connection is dropped
    after any failure (`send`), so nothing needs undoing with RSET. Only for plain dot-atom
    addresses (`_plain_envelope`): they need no quoting, no SMTPUTF8, and cannot carry a line
    break into the command.
    """
    commands = f"MAIL FROM:<{email.envelope_from}>\r\nRCPT TO:<{email.envelope_to}>\r\nDATA\r\n"
    _command(Stage.MAIL, lambda: connection.send(commands))
    for stage in (Stage.MAIL, Stage.RCPT, Stage.DATA):
        code, reply = _command(stage, connection.getreply)
        _expect(stage, code, reply)


_SUCCESS = {Stage.MAIL: (250,), Stage.RCPT: (250, 251), Stage.DATA: (354,)}


def _expect(stage: Stage, code: int, reply: bytes) -> None:
    if code not in _SUCCESS[stage]:
        raise reply_error(stage, code, _decode(reply))


def _plain_envelope(email: RenderedEmail) -> bool:
    return mime_writer.is_plain_address(email.envelope_from) and mime_writer.is_plain_address(
        email.envelope_to
    )


def _data_block(data: bytes) -> bytes:
    """The message as the DATA stage carries it: leading dots doubled, CRLF, then the final dot
    (RFC 5321 §4.5.2), as `smtplib.SMTP.data` writes it."""
    block = _LEADING_DOT.sub(b"..", data)
    if not block.endswith(b"\r\n"):
        block += b"\r\n"
    return block + b".\r\n"


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
