"""The welcome email for a `user_registered` event, built without any I/O.

The HTML goes through Jinja2 with autoescaping on, so a name like `<script>` cannot add markup.
A plain dot-atom address (nearly every one) gets the message written straight to bytes by
`mime_writer`; any other (quoted local parts, international domains) goes through the `email`
package, whose header registry refuses line breaks and quotes what needs it, except the `To:`
line (`to_header`): its folding of a display name can change the header's structure. Either
way a mail server parses the result into the same headers and parts (test_email_rendering.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.errors import MessageError
from email.header import Header
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP
from typing import Final

import idna
import jinja2

from email_consumer import mime_writer
from email_consumer.errors import UndeliverableMessage
from email_consumer.ports import RenderedEmail
from shared.events import UserRegistered

TEXT_TEMPLATE = "welcome.txt.j2"
HTML_TEMPLATE = "welcome.html.j2"


class WelcomeRenderer:
    """Builds the welcome email for an event, ready for the wire; `render` is pure."""

    def __init__(self, mail_from: Address) -> None:
        self._mail_from = mail_from
        self._policy = SMTP.clone(header_factory=_ReusedHeaderClasses())
        # MAIL_FROM never changes: the email package writes its header line once.
        self._from_line = self._policy.fold_binary(
            *self._policy.header_store_parse("From", mail_from)
        )
        loader = jinja2.PackageLoader("email_consumer", "templates")
        # The plain-text part must not be HTML-escaped, the HTML part always is.
        self._text = jinja2.Environment(
            loader=loader,
            autoescape=False,  # noqa: S701 - the plain-text part is never shown as HTML
            undefined=jinja2.StrictUndefined,
        ).get_template(TEXT_TEMPLATE)
        self._html = jinja2.Environment(
            loader=loader, autoescape=True, undefined=jinja2.StrictUndefined
        ).get_template(HTML_TEMPLATE)

    def render(self, event: UserRegistered) -> RenderedEmail:
        """The email, or `UndeliverableMessage` when the address cannot be put in a header."""
        content = self._content(event)
        plain = mime_writer.is_plain_address(event.data.email)
        return self._envelope(content, _serialised(self._write if plain else self._build, content))

    def render_with_email_package(self, event: UserRegistered) -> RenderedEmail:
        """The same email, always built by the `email` package (what `render` is checked
        against; `render` uses it for the addresses `mime_writer` does not take)."""
        content = self._content(event)
        return self._envelope(content, _serialised(self._build, content))

    def _content(self, event: UserRegistered) -> _Content:
        user = event.data
        address = ascii_domain_address(user.email)
        greeting_name = user.full_name or user.username
        context = {"greeting_name": greeting_name, "username": user.username, "email": user.email}
        return _Content(
            event_id=event.event_id,
            # Mail readers drop white space at either end of a display name, and the email
            # package does when it folds one: dropping it here keeps both ways of writing equal.
            to_name=(user.full_name or "").strip(),
            to_address=address,
            subject=f"Welcome, {greeting_name}!",
            # RFC 5322 3.6.1 requires a Date. The event's time, not the sending time: `render`
            # stays pure, and a resent email is the same message, byte for byte.
            date=event.occurred_at,
            message_id=message_id_for(event.event_id, self._mail_from),
            text=self._text.render(context),
            html=self._html.render(context),
        )

    def _envelope(self, content: _Content, data: bytes) -> RenderedEmail:
        # The envelope recipient is the To header's address, so the two can never disagree.
        return RenderedEmail(
            envelope_from=self._mail_from.addr_spec,
            envelope_to=content.to_address,
            data=data,
            message_id=content.message_id,
        )

    def _write(self, content: _Content) -> bytes:
        headers = b"".join(
            (
                mime_writer.mailbox("To", content.to_name, content.to_address),
                self._from_line,
                mime_writer.unstructured("Subject", content.subject),
                mime_writer.date("Date", content.date),
                mime_writer.identifier("Message-ID", content.message_id),
                mime_writer.identifier("X-Event-ID", content.event_id),
            )
        )
        # Derived from the event, so the same event always yields the same bytes.
        boundary = "=_welcome_" + content.event_id.replace("-", "")
        return mime_writer.multipart_alternative(
            headers,
            boundary,
            (
                mime_writer.Alternative("plain", content.text),
                mime_writer.Alternative("html", content.html),
            ),
        )

    def _build(self, content: _Content) -> bytes:
        message = EmailMessage(policy=self._policy)
        to = Address(addr_spec=content.to_address)
        if to.addr_spec != content.to_address:
            # The package had to quote the local part, so the header would not show the
            # address the envelope uses. Such addresses are not worth the ambiguity.
            raise ValueError("the address needs quoting")
        # The To line is written here, not by the package: see `to_header`.
        message["From"] = self._mail_from
        message["Subject"] = content.subject
        message["Date"] = content.date
        message["Message-ID"] = content.message_id
        message["X-Event-ID"] = content.event_id
        message.set_content(content.text)
        message.add_alternative(content.html, subtype="html")
        # Serialising finds what the SMTP envelope cannot carry (say, a non-ASCII local part),
        # so that fails here as a permanent error, not inside the SMTP adapter.
        return to_header(content.to_name, content.to_address) + message.as_bytes()


def _serialised(write: Callable[[_Content], bytes], content: _Content) -> bytes:
    """`write(content)`, with any refusal to encode a value as `UndeliverableMessage`."""
    try:
        return write(content)
    except (ValueError, TypeError, IndexError, UnicodeError, MessageError) as error:
        raise UndeliverableMessage(
            f"cannot build the welcome email: {type(error).__name__}"
        ) from None


@dataclass(frozen=True, slots=True)
class _Content:
    """What goes into the email, whichever way it is written."""

    event_id: str
    to_name: str
    to_address: str
    subject: str
    date: datetime
    message_id: str
    text: str
    html: str


class _ReusedHeaderClasses(HeaderRegistry):
    """The standard header registry, building each header's class once instead of per header.

    `HeaderRegistry` creates a new class with `type()` for every header it parses (some 14 us,
    about 27 times per email, a fifth of rendering). The classes never change, so one per header
    name serves every email; parsing, and with it the refusal of line breaks, stays the standard.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        header_class = self._classes.get(key)
        if header_class is None:
            # A race between threads builds the class twice; either copy works the same.
            header_class = self._classes[key] = super().__getitem__(name)
        return header_class


# An ASCII dot-atom on either side of the `@`: one token each, nothing a header parser reads as
# structure. Wider than `mime_writer`'s plain address: RFC 5322's domain is any dot-atom.
_DOT_ATOM: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_DOT_ATOM_ADDRESS: Final = re.compile(rf"{_DOT_ATOM}@{_DOT_ATOM}")


def to_header(display_name: str, address: str) -> bytes:
    """The `To:` line for one mailbox, whose structure no display name can change.

    Not left to the `email` package: folding a long display name with specials, it drops the
    quotes around it (a CPython bug, seen on 3.11 to 3.13), so `x@evil.example, ` five times
    became five more recipients, and `Bcc: ...;` a group hiding the user. A plain dot-atom
    address goes through `mime_writer.mailbox`; any other dot-atom address gets its display
    name as RFC 2047 encoded-words, which carry no header syntax, and the address on a line of
    its own. Anything else is refused (ValueError).
    """
    if mime_writer.is_plain_address(address):
        return mime_writer.mailbox("To", display_name, address)
    if len(address) > 254 or _DOT_ATOM_ADDRESS.fullmatch(address) is None:
        raise ValueError("the address is not an ASCII dot-atom address")
    if not display_name:
        return f"To: {address}\r\n".encode("ascii")
    phrase = Header(display_name, "utf-8", header_name="To").encode(linesep="\r\n")
    return f"To: {phrase}\r\n <{address}>\r\n".encode("ascii")


def ascii_domain_address(address: str) -> str:
    """The address with an international domain written in ASCII (IDNA), as headers need.

    Left as it was, such a domain became an encoded-word inside the address, which no mail
    client reads back; in ASCII it needs neither that nor SMTPUTF8. A non-ASCII local part has
    no ASCII form: it stays, and needs a server with SMTPUTF8 (or is refused when serialised).
    """
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except (idna.IDNAError, UnicodeError):
        raise UndeliverableMessage("the address's domain is not a valid domain name") from None


def message_id_for(event_id: str, mail_from: Address) -> str:
    """`<event_id@sender-domain>`: the same event always yields the same Message-ID."""
    return f"<{event_id}@{mail_from.domain}>"
