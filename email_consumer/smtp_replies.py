"""What an SMTP reply, or its absence, means for the event: pure, by stage and reply code.

A code alone does not say whose problem it is (`554` to MAIL FROM refuses every message, `550`
to RCPT TO one recipient), so the verdict depends on the stage it answers:

| stage | 4xx | 5xx | no reply (timeout, dropped, garbled) |
| --- | --- | --- | --- |
| SESSION (greeting, EHLO, STARTTLS, AUTH) | transient | server refusal | unavailable |
| MAIL (MAIL FROM), DATA (the DATA command) | transient | server refusal | unavailable |
| RCPT (RCPT TO) | transient | recipient refused (*) | unavailable |
| CONTENT (the reply to the final dot) | transient | message refused (*) | **uncertain** |

(*) Unless it names authentication or a sequence problem (`AUTH_OR_SEQUENCE_CODES`,
`AUTH_ENHANCED_STATUSES`), a server refusal at any stage. Server refusals are transient;
refused recipients and messages are permanent (`SmtpRejected`). Only after the final dot can
the server hold the message without saying so (RFC 5321 §4.5.3.2.6, §6.1).
"""

from __future__ import annotations

import enum
import re

from email_consumer.errors import (
    SmtpRejected,
    SmtpSenderRefused,
    SmtpSessionRefused,
    SmtpTemporarilyRefused,
    SmtpUnavailable,
    UncertainDelivery,
)
from shared.errors import ServiceError


class Stage(enum.Enum):
    SESSION = "session"  # connect, greeting, EHLO, STARTTLS, AUTH
    MAIL = "MAIL FROM"
    RCPT = "RCPT TO"
    DATA = "DATA"  # the command, before the server's 354
    CONTENT = "the final dot"  # the message went out; the reply to its end


# 503 bad sequence (the server wants AUTH first), 530 authentication required, 534 mechanism too
# weak, 535 credentials invalid, 538 encryption required for the mechanism.
AUTH_OR_SEQUENCE_CODES = frozenset({503, 530, 534, 535, 538})
# Enhanced statuses about our credentials (RFC 4954: invalid, too weak, encryption needed).
AUTH_ENHANCED_STATUSES = frozenset({"5.7.8", "5.7.9", "5.7.11"})
_ENHANCED_STATUS = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
_PER_RECIPIENT_STAGES = (Stage.RCPT, Stage.CONTENT)


def reply_error(stage: Stage, code: int, text: str) -> ServiceError:
    """The error for a reply that is not the success the stage expects."""
    if 400 <= code < 500:
        return SmtpTemporarilyRefused(code, text)
    if code >= 500:
        if stage in _PER_RECIPIENT_STAGES and not concerns_the_server(code, text):
            return SmtpRejected(code, text)
        if stage is Stage.SESSION:
            return SmtpSessionRefused(f"SMTP {code}: {text}")
        return SmtpSenderRefused(code, text, stage.value)
    # smtplib uses -1 for "no valid reply"; any other code is one the stage never expects.
    return no_reply(stage, text or f"unexpected reply {code} to {stage.value}")


def no_reply(stage: Stage, detail: str) -> ServiceError:
    """The error when the server's reply never came: timed out, connection dropped, garbled."""
    if stage is Stage.CONTENT:
        return UncertainDelivery(
            f"no reply to the final dot ({detail}): the mail server may have accepted the message"
        )
    return SmtpUnavailable(detail)


def concerns_the_server(code: int, text: str) -> bool:
    """Whether a 5xx names authentication or the protocol sequence, not the recipient."""
    if code in AUTH_OR_SEQUENCE_CODES:
        return True
    match = _ENHANCED_STATUS.match(text)
    return match is not None and match.group(1) in AUTH_ENHANCED_STATUSES
