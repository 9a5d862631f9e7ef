"""The smtplib adapter against a real SMTP server that offers PIPELINING (RFC 2920).

MAIL, RCPT and DATA go out in one write; a refusal must still be judged by the stage it
answers, exactly as stage by stage (test_worker_smtp_sender.py covers that path).
"""

from __future__ import annotations

import dataclasses

import pytest

from email_consumer.errors import (
    SmtpRejected,
    SmtpSenderRefused,
    SmtpTemporarilyRefused,
    UncertainDelivery,
)
from email_consumer.smtp_sender import SmtpEmailSender
from tests.support.smtp import SmtpTestServer
from tests.support.smtp_client import settings_for, short_email


@pytest.fixture
def pipelining_server(smtp_server: SmtpTestServer) -> SmtpTestServer:
    smtp_server.offer_pipelining()
    return smtp_server


def _sender(server: SmtpTestServer) -> SmtpEmailSender:
    return SmtpEmailSender(settings_for(server))


def test_mail_rcpt_and_data_go_out_together_and_the_message_arrives_unchanged(
    pipelining_server: SmtpTestServer,
) -> None:
    sender = _sender(pipelining_server)
    first, second = short_email(), short_email("bob@example.com")
    sender.send(first)
    sender.send(second)  # on the same, reused connection
    received = pipelining_server.messages
    assert [(r.envelope_from, r.envelope_to, r.raw) for r in received] == [
        ("welcome@example.com", ("alice@example.com",), first.data),
        ("welcome@example.com", ("bob@example.com",), second.data),
    ]
    assert pipelining_server.mails_with_recipient_sent_along == 2
    assert sender.connections_opened == 1
    sender.close_all()


def test_a_server_that_does_not_offer_it_gets_one_command_at_a_time(
    smtp_server: SmtpTestServer,
) -> None:
    _sender(smtp_server).send(short_email())
    assert len(smtp_server.messages) == 1
    assert smtp_server.mails_with_recipient_sent_along == 0


def test_an_address_that_needs_smtputf8_goes_stage_by_stage(
    pipelining_server: SmtpTestServer,
) -> None:
    # Only plain dot-atom addresses are written into pipelined commands by hand; any other
    # goes through smtplib's MAIL with its SMTPUTF8 option.
    email = dataclasses.replace(short_email(), envelope_to="jürgen@example.com")
    _sender(pipelining_server).send(email)
    (received,) = pipelining_server.messages
    assert received.envelope_to == ("jürgen@example.com",)
    assert pipelining_server.mails_with_recipient_sent_along == 0


def test_a_refused_sender_is_judged_by_the_mail_reply_not_the_replies_after_it(
    pipelining_server: SmtpTestServer,
) -> None:
    # The server answers RCPT and DATA with 503 (no sender) after refusing MAIL: the verdict
    # is MAIL's 530, a refusal of the server, not a 5xx about the recipient.
    pipelining_server.refuse_sender("530 5.7.0 Authentication required")
    sender = _sender(pipelining_server)
    with pytest.raises(SmtpSenderRefused, match="530") as refused:
        sender.send(short_email())
    assert refused.value.code == 530
    assert pipelining_server.messages == []
    assert sender.open_connections == 0  # dropped: the replies after MAIL's were never read


def test_a_refused_recipient_is_permanent_and_the_connection_is_replaced(
    pipelining_server: SmtpTestServer,
) -> None:
    pipelining_server.refuse_recipients("550 5.1.1 No such user")
    sender = _sender(pipelining_server)
    with pytest.raises(SmtpRejected, match="No such user") as refused:
        sender.send(short_email())
    assert refused.value.code == 550
    pipelining_server.refuse_recipients(None)
    # The DATA reply left unread on the old connection must not be taken for the next MAIL's.
    sender.send(short_email())
    assert len(pipelining_server.messages) == 1
    assert sender.connections_opened == 2


def test_a_recipient_refused_for_the_server_s_sake_stays_a_server_refusal(
    pipelining_server: SmtpTestServer,
) -> None:
    pipelining_server.refuse_recipients("530 5.7.0 Authentication required")
    with pytest.raises(SmtpSenderRefused):
        _sender(pipelining_server).send(short_email())


def test_a_4xx_to_the_message_is_transient(pipelining_server: SmtpTestServer) -> None:
    pipelining_server.fail_transiently(1, "452 4.3.1 Insufficient storage")
    sender = _sender(pipelining_server)
    with pytest.raises(SmtpTemporarilyRefused) as caught:
        sender.send(short_email())
    assert caught.value.code == 452
    sender.send(short_email())
    assert len(pipelining_server.messages) == 1


def test_a_restarted_server_is_reconnected_to_and_the_message_sent_once(
    pipelining_server: SmtpTestServer,
) -> None:
    sender = _sender(pipelining_server)
    sender.send(short_email())
    pipelining_server.stop()
    pipelining_server.start()
    # The pipelined commands go into a connection the server closed: the MAIL reply never
    # comes, nothing of the message went out, so one fresh connection sends it.
    sender.send(short_email())
    assert len(pipelining_server.messages) == 2
    assert sender.connections_opened == 2
    assert pipelining_server.mails_with_recipient_sent_along == 2


def test_no_reply_to_the_final_dot_is_still_uncertain(pipelining_server: SmtpTestServer) -> None:
    pipelining_server.drop_after_storing()
    with pytest.raises(UncertainDelivery):
        _sender(pipelining_server).send(short_email())
    assert len(pipelining_server.messages) == 1
