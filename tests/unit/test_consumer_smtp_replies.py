"""Classifying SMTP replies by stage and code: whose problem a refusal is."""

from __future__ import annotations

import pytest

from email_consumer.errors import (
    ServerRefused,
    SmtpRejected,
    SmtpSenderRefused,
    SmtpSessionRefused,
    SmtpTemporarilyRefused,
    SmtpUnavailable,
    UncertainDelivery,
)
from email_consumer.smtp_replies import Stage, no_reply, reply_error
from shared.errors import PermanentError, TransientError


@pytest.mark.parametrize(
    ("stage", "code", "text"),
    [
        (Stage.SESSION, 554, "5.7.1 No SMTP service here"),
        (Stage.SESSION, 535, "5.7.8 Authentication credentials invalid"),
        (Stage.MAIL, 530, "5.7.0 Authentication required"),
        (Stage.MAIL, 553, "5.7.1 Sender address rejected: not owned by user"),
        (Stage.MAIL, 554, "5.7.1 Access denied"),
        (Stage.DATA, 554, "5.5.1 No valid recipients"),
        (Stage.RCPT, 530, "5.7.0 Authentication required"),
        (Stage.RCPT, 503, "5.5.1 Error: need MAIL command"),
        (Stage.RCPT, 550, "5.7.8 Authentication credentials invalid"),
        (Stage.CONTENT, 535, "5.7.8 Authentication failed"),
    ],
)
def test_refusals_of_the_session_sender_or_login_concern_the_server(
    stage: Stage, code: int, text: str
) -> None:
    error = reply_error(stage, code, text)
    assert isinstance(error, ServerRefused)
    assert isinstance(error, TransientError), "never dead-lettered as the recipient's fault"
    assert text in str(error)


def test_a_session_refusal_and_a_sender_refusal_are_told_apart() -> None:
    assert isinstance(reply_error(Stage.SESSION, 554, "no"), SmtpSessionRefused)
    sender = reply_error(Stage.MAIL, 530, "5.7.0 Authentication required")
    assert isinstance(sender, SmtpSenderRefused)
    assert sender.code == 530
    assert "MAIL FROM" in str(sender)


@pytest.mark.parametrize(
    ("stage", "code", "text"),
    [
        (Stage.RCPT, 550, "5.1.1 No such user"),
        (Stage.RCPT, 553, "5.1.3 Bad recipient address syntax"),
        (Stage.RCPT, 554, "5.7.1 Relay access denied"),
        (Stage.CONTENT, 554, "5.7.1 Rejected as spam"),
        (Stage.CONTENT, 552, "5.3.4 Message too big"),
    ],
)
def test_refusals_of_the_recipient_or_the_message_are_permanent(
    stage: Stage, code: int, text: str
) -> None:
    error = reply_error(stage, code, text)
    assert isinstance(error, SmtpRejected)
    assert isinstance(error, PermanentError)
    assert (error.code, error.text) == (code, text)


@pytest.mark.parametrize("stage", list(Stage))
@pytest.mark.parametrize("code", [421, 450, 451, 452])
def test_4xx_is_transient_at_every_stage(stage: Stage, code: int) -> None:
    error = reply_error(stage, code, "try later")
    assert isinstance(error, SmtpTemporarilyRefused)
    assert error.code == code


@pytest.mark.parametrize("stage", [Stage.SESSION, Stage.MAIL, Stage.RCPT, Stage.DATA])
def test_no_reply_before_the_final_dot_is_an_outage(stage: Stage) -> None:
    assert isinstance(no_reply(stage, "timed out"), SmtpUnavailable)
    assert isinstance(reply_error(stage, -1, ""), SmtpUnavailable)


def test_no_reply_to_the_final_dot_is_uncertain_not_transient() -> None:
    for error in (no_reply(Stage.CONTENT, "timed out"), reply_error(Stage.CONTENT, -1, "")):
        assert isinstance(error, UncertainDelivery)
        assert not isinstance(error, TransientError | PermanentError)
        assert error.final is False
        assert "may have accepted" in str(error)
