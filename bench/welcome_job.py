"""The job the peers run in the delivery benchmark: render the welcome email and send it.

It does what the worker does for one event (Jinja2 templates, plain text and HTML parts, a
Message-ID from the event id, one reused SMTP connection per thread), so that only the
framework around it differs. It keeps no record of processed events, which the worker does:
the peer carries less work, not more.
"""

from __future__ import annotations

import smtplib
import threading
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

from jinja2 import Environment

_TEXT = "Hello {{ name }},\n\nwelcome aboard! Your username is {{ username }}.\n"
_HTML = (
    "<html><body><p>Hello {{ name }},</p>"
    "<p>welcome aboard! Your username is <b>{{ username }}</b>.</p></body></html>"
)


class WelcomeRenderer:
    """The welcome email of an event, as the worker renders it; holds no connection."""

    def __init__(self) -> None:
        self._text = Environment(autoescape=False).from_string(_TEXT)  # noqa: S701 - plain text
        self._html = Environment(autoescape=True).from_string(_HTML)

    def render(self, event: dict[str, Any]) -> EmailMessage:
        data = event["data"]
        name = data["full_name"] or data["username"]
        message = EmailMessage()
        message["From"] = Address("Example", addr_spec="welcome@example.com")
        message["To"] = Address(data["full_name"] or "", addr_spec=data["email"])
        message["Subject"] = f"Welcome, {name}!"
        message["Message-ID"] = f"<{event['event_id']}@bench.example.com>"
        message["X-Event-ID"] = event["event_id"]
        message.set_content(self._text.render(name=name, username=data["username"]))
        message.add_alternative(
            self._html.render(name=name, username=data["username"]), subtype="html"
        )
        return message


class WelcomeSender:
    """Renders and sends welcome emails; safe to call from many threads at once."""

    def __init__(self, smtp_host: str, smtp_port: int, timeout_s: float = 10.0) -> None:
        self._host = smtp_host
        self._port = smtp_port
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._renderer = WelcomeRenderer()

    def render(self, event: dict[str, Any]) -> EmailMessage:
        return self._renderer.render(event)

    def send(self, event: dict[str, Any]) -> None:
        message = self.render(event)
        try:
            self._connection().send_message(message)
        except smtplib.SMTPServerDisconnected:
            # The reused connection went stale: one fresh connection, as the worker does.
            self._local.smtp = None
            self._connection().send_message(message)

    def _connection(self) -> smtplib.SMTP:
        smtp: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        if smtp is None:
            smtp = smtplib.SMTP(self._host, self._port, timeout=self._timeout_s)
            self._local.smtp = smtp
        return smtp
