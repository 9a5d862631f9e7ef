"""A real SMTP server for tests (aiosmtpd, in process) that can be told to misbehave.

It records every accepted message and can answer 4xx a given number of times, refuse with 5xx,
stall before answering, take a fixed time per message (a remote mail server), store a message
and then answer late or drop the connection (an uncertain outcome for the client), refuse the
sender (a server that wants a login), or go down and come back on the same port. It can offer
PIPELINING, and tells whether a client used it.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.ports import free_port


@dataclass(frozen=True)
class ReceivedEmail:
    envelope_from: str
    envelope_to: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    accepted_at: float  # time.time() when the server accepted it


@dataclass
class _Behaviour:
    transient_failures_left: int = 0
    transient_reply: str = "451 4.3.0 Try again later"
    permanent_reply: str | None = None
    stall_s: float = 0.0
    latency_s: float = 0.0
    reply_late_s: float = 0.0
    drop_after_storing: bool = False
    sender_reply: str | None = None
    senders_refused: int = 0
    recipient_reply: str | None = None
    recipient_stall_s: float = 0.0
    recipients_stalled: int = 0
    offer_pipelining: bool = False
    mails_with_recipient_sent_along: int = 0
    received: list[ReceivedEmail] = field(default_factory=list)


class _Handler:
    def __init__(self, server: SmtpTestServer) -> None:
        self._server = server

    async def handle_EHLO(  # noqa: N802
        self, smtp: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves it to a handler that answers EHLO
        with self._server.lock:
            if self._server.behaviour.offer_pipelining:
                responses.insert(-1, "250-PIPELINING")  # before the last line, "250 HELP"
        return responses

    async def handle_MAIL(  # noqa: N802
        self, smtp: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        behaviour = self._server.behaviour
        # What the client had sent beyond MAIL FROM before hearing its reply: a pipelining
        # client's RCPT TO is already here (aiosmtpd's reader is an asyncio.StreamReader).
        sent_along = bytes(getattr(smtp._reader, "_buffer", b""))
        with self._server.lock:
            if sent_along.upper().startswith(b"RCPT TO:"):
                behaviour.mails_with_recipient_sent_along += 1
            if behaviour.sender_reply is not None:
                behaviour.senders_refused += 1
                return behaviour.sender_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802
        self, smtp: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        behaviour = self._server.behaviour
        with self._server.lock:
            reply, stall = behaviour.recipient_reply, behaviour.recipient_stall_s
            if stall:
                behaviour.recipients_stalled += 1
        if stall:
            await asyncio.sleep(stall)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        behaviour = self._server.behaviour
        with self._server.lock:
            stall, latency = behaviour.stall_s, behaviour.latency_s
            reply_late_s, drop = behaviour.reply_late_s, behaviour.drop_after_storing
            if behaviour.permanent_reply is not None:
                return behaviour.permanent_reply
            if behaviour.transient_failures_left > 0:
                behaviour.transient_failures_left -= 1
                return behaviour.transient_reply
        if stall:
            await asyncio.sleep(stall)
        if latency:
            await asyncio.sleep(latency)
        raw = bytes(envelope.original_content or envelope.content)
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        received = ReceivedEmail(
            envelope_from=str(envelope.mail_from),
            envelope_to=tuple(envelope.rcpt_tos),
            message=parsed,
            raw=raw,
            accepted_at=time.time(),
        )
        with self._server.lock:
            behaviour.received.append(received)
            self._server.arrived.notify_all()
        if drop:
            # Stored, but the client never hears it: the connection goes before the reply.
            smtp.transport.abort()
        if reply_late_s:
            await asyncio.sleep(reply_late_s)
        return "250 2.0.0 OK"


class SmtpTestServer:
    """An aiosmtpd server on 127.0.0.1:`port`; start(), stop() and the failure switches."""

    def __init__(
        self,
        port: int | None = None,
        *,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.behaviour = _Behaviour()
        self._tls_context = tls_context
        self._require_starttls = require_starttls
        self._controller: Controller | None = None

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._controller is not None:
            return
        controller = Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            tls_context=self._tls_context,
            require_starttls=self._require_starttls,
            # Accept non-ASCII addresses and headers, as real servers do.
            enable_SMTPUTF8=True,
            ready_timeout=10,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Go down: new connections are refused until start() is called again."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    # --- misbehaviour ----------------------------------------------------------------------
    def fail_transiently(self, times: int, reply: str = "451 4.3.0 Try again later") -> None:
        with self.lock:
            self.behaviour.transient_failures_left = times
            self.behaviour.transient_reply = reply

    def refuse_permanently(self, reply: str | None = "550 5.1.1 Mailbox unavailable") -> None:
        """Answer every message with `reply`; None returns to accepting."""
        with self.lock:
            self.behaviour.permanent_reply = reply

    def stall(self, seconds: float) -> None:
        """Wait this long before answering each message (a hung mail server)."""
        with self.lock:
            self.behaviour.stall_s = seconds

    def set_latency(self, seconds: float) -> None:
        """Take this long to accept each message (a remote mail server)."""
        with self.lock:
            self.behaviour.latency_s = seconds

    def reply_late(self, seconds: float) -> None:
        """Store each message at once but answer its final dot only `seconds` later."""
        with self.lock:
            self.behaviour.reply_late_s = seconds

    def drop_after_storing(self, drop: bool = True) -> None:
        """Store each message, then drop the connection instead of answering its final dot."""
        with self.lock:
            self.behaviour.drop_after_storing = drop

    def refuse_sender(self, reply: str | None = "530 5.7.0 Authentication required") -> None:
        """Answer every MAIL FROM with `reply` (None accepts again): a server-wide refusal."""
        with self.lock:
            self.behaviour.sender_reply = reply

    def refuse_recipients(self, reply: str | None = "550 5.1.1 No such user") -> None:
        """Answer every RCPT TO with `reply` (None accepts again)."""
        with self.lock:
            self.behaviour.recipient_reply = reply

    def stall_recipients(self, seconds: float) -> None:
        """Wait this long before answering each RCPT TO (a client mid-transaction, before DATA)."""
        with self.lock:
            self.behaviour.recipient_stall_s = seconds

    @property
    def recipients_stalled(self) -> int:
        """How many RCPT TO commands `stall_recipients` has held (counted on arrival)."""
        with self.lock:
            return self.behaviour.recipients_stalled

    def offer_pipelining(self, offered: bool = True) -> None:
        """Offer PIPELINING (RFC 2920) in EHLO to sessions opened from now on; off at first."""
        with self.lock:
            self.behaviour.offer_pipelining = offered

    @property
    def mails_with_recipient_sent_along(self) -> int:
        """MAIL FROM commands whose RCPT TO had arrived before their reply went out."""
        with self.lock:
            return self.behaviour.mails_with_recipient_sent_along

    @property
    def senders_refused(self) -> int:
        """How many MAIL FROM commands were refused by `refuse_sender`."""
        with self.lock:
            return self.behaviour.senders_refused

    # --- observation -----------------------------------------------------------------------
    @property
    def messages(self) -> list[ReceivedEmail]:
        with self.lock:
            return list(self.behaviour.received)

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[ReceivedEmail]:
        """Wait until at least `count` messages arrived; fail with what did arrive if not."""
        deadline = time.monotonic() + timeout_s
        with self.arrived:
            while len(self.behaviour.received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} emails within {timeout_s} s, "
                        f"got {len(self.behaviour.received)}"
                    )
                self.arrived.wait(remaining)
            return list(self.behaviour.received)

    def environment(self) -> dict[str, str]:
        """The variables that point a worker at this server."""
        return {"SMTP_HOST": self.host, "SMTP_PORT": str(self.port)}
