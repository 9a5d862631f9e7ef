"""The worker's SMTP client as the sender tests build it: settings for a test server, one email.

Kept apart from tests/support/smtp.py, which is the server and knows nothing of the worker.
"""

from __future__ import annotations

import dataclasses
import uuid
from email.message import EmailMessage
from email.policy import SMTP

from email_consumer.ports import RenderedEmail
from email_consumer.settings import SmtpSettings
from tests.support.smtp import SmtpTestServer


def settings_for(server: SmtpTestServer, **changes: object) -> SmtpSettings:
    """Plain SMTP to `server`, no login, a 5 s timeout; `changes` replace any of those."""
    settings = SmtpSettings(
        host=server.host, port=server.port, username="", password="", starttls=False, timeout_s=5.0
    )
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


def short_email(to: str = "alice@example.com") -> RenderedEmail:
    """A small, valid email from welcome@example.com with a Message-ID of its own."""
    message = EmailMessage(policy=SMTP)
    message["From"] = "welcome@example.com"
    message["To"] = to
    message["Subject"] = "hi"
    message["Message-ID"] = message_id = f"<{uuid.uuid4()}@example.com>"
    message.set_content("hello")
    return RenderedEmail("welcome@example.com", to, message.as_bytes(), message_id)
