"""The smtplib adapter against a real SMTP server: error classes, connection reuse, TLS."""

from __future__ import annotations

import dataclasses
import smtplib
import ssl
import subprocess
import threading
from pathlib import Path

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
from email_consumer.settings import SmtpSettings
from email_consumer.smtp_sender import SmtpEmailSender
from shared.errors import TransientError
from tests.support.ports import free_port
from tests.support.smtp import SmtpTestServer
from tests.support.smtp_client import settings_for, short_email
from tests.support.waiting import wait_until
from tests.support.worker import smtp_server_requiring_login


def test_the_rendered_bytes_go_out_unchanged_to_the_envelope(smtp_server: SmtpTestServer) -> None:
    email = short_email()
    sender = SmtpEmailSender(settings_for(smtp_server))
    sender.send(dataclasses.replace(email, envelope_to="bob@example.com"))
    (received,) = smtp_server.messages
    assert received.envelope_from == "welcome@example.com"
    # The envelope, not the To header, says where it goes: the renderer keeps the two equal.
    assert received.envelope_to == ("bob@example.com",)
    assert received.raw == email.data
    sender.close_all()


def test_a_busy_connection_is_reused_without_a_noop_round_trip(
    smtp_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    noops = []
    real_noop = smtplib.SMTP.noop

    def counting_noop(connection: smtplib.SMTP) -> tuple[int, bytes]:
        noops.append(connection)
        return real_noop(connection)

    monkeypatch.setattr(smtplib.SMTP, "noop", counting_noop)
    now = [0.0]
    sender = SmtpEmailSender(settings_for(smtp_server), idle_check_after_s=5, clock=lambda: now[0])
    sender.send(short_email())
    now[0] = 4.0
    sender.send(short_email())
    assert noops == []
    now[0] = 9.5  # idle 5.5 s: the server may have dropped it, so it is checked first
    sender.send(short_email())
    assert len(noops) == 1
    assert len(smtp_server.messages) == 3
    assert sender.connections_opened == 1
    sender.close_all()


def test_an_idle_connection_the_server_dropped_is_replaced(smtp_server: SmtpTestServer) -> None:
    now = [0.0]
    sender = SmtpEmailSender(settings_for(smtp_server), idle_check_after_s=5, clock=lambda: now[0])
    sender.send(short_email())
    smtp_server.stop()
    smtp_server.start()
    now[0] = 60.0
    sender.send(short_email())  # NOOP finds the connection dead; a fresh one carries the email
    assert sender.connections_opened == 2
    assert sender.open_connections == 1, "the dead connection must be dropped"
    assert len(smtp_server.messages) == 2
    sender.close_all()


def test_messages_are_delivered_over_one_reused_connection(smtp_server: SmtpTestServer) -> None:
    sender = SmtpEmailSender(settings_for(smtp_server))
    for _ in range(3):
        sender.send(short_email())
    assert sender.connections_opened == 1
    assert len(smtp_server.messages) == 3
    sender.close_all()


def test_threads_share_at_most_max_connections(smtp_server: SmtpTestServer) -> None:
    # Slow enough that the six sends overlap: without the limit each would open its own.
    smtp_server.set_latency(0.2)
    sender = SmtpEmailSender(settings_for(smtp_server), max_connections=2)
    threads = [threading.Thread(target=sender.send, args=(short_email(),)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(smtp_server.messages) == 6
    assert sender.connections_opened == 2
    sender.close_all()
    assert sender.open_connections == 0


def test_a_4xx_reply_is_transient_with_code_and_text(smtp_server: SmtpTestServer) -> None:
    smtp_server.fail_transiently(1, "452 4.3.1 Insufficient storage")
    sender = SmtpEmailSender(settings_for(smtp_server))
    with pytest.raises(SmtpTemporarilyRefused) as caught:
        sender.send(short_email())
    assert caught.value.code == 452
    assert "Insufficient storage" in caught.value.text
    sender.send(short_email())  # the next try reconnects and succeeds
    assert len(smtp_server.messages) == 1


def test_a_5xx_reply_is_permanent_with_code_and_text(smtp_server: SmtpTestServer) -> None:
    smtp_server.refuse_permanently("554 5.7.1 Rejected as spam")
    with pytest.raises(SmtpRejected) as caught:
        SmtpEmailSender(settings_for(smtp_server)).send(short_email())
    assert caught.value.code == 554
    assert "Rejected as spam" in caught.value.text


def test_a_refused_connection_is_transient() -> None:
    server = SmtpTestServer(port=free_port())  # never started
    with pytest.raises(SmtpUnavailable):
        SmtpEmailSender(settings_for(server)).send(short_email())


def test_a_server_that_stalls_past_the_final_reply_timeout_may_have_theshort_email(
    smtp_server: SmtpTestServer,
) -> None:
    smtp_server.stall(3)  # before answering the final dot
    settings = settings_for(smtp_server, timeout_s=0.5, final_reply_timeout_s=0.5)
    with pytest.raises(UncertainDelivery, match="may have accepted"):
        SmtpEmailSender(settings).send(short_email())


def test_a_reply_to_the_final_dot_past_the_command_timeout_is_waited_for(
    smtp_server: SmtpTestServer,
) -> None:
    # RFC 5321 §4.5.3.2.6: the server may take minutes to answer the final dot; giving up
    # after the command timeout made the worker send the stored message again.
    smtp_server.reply_late(1.5)
    settings = settings_for(smtp_server, timeout_s=0.5, final_reply_timeout_s=10)
    SmtpEmailSender(settings).send(short_email())
    assert len(smtp_server.messages) == 1


def test_a_reused_connection_dropped_after_the_dot_is_not_resent_on_a_fresh_one(
    smtp_server: SmtpTestServer,
) -> None:
    sender = SmtpEmailSender(settings_for(smtp_server))
    sender.send(short_email())  # leaves the connection idle in the pool
    smtp_server.drop_after_storing()
    with pytest.raises(UncertainDelivery):
        sender.send(short_email())
    # The second message was stored once; before the fix the pool sent it again at once.
    assert len(smtp_server.messages) == 2
    assert sender.connections_opened == 1


def test_a_530_to_mail_from_is_a_server_refusal_never_a_verdict_on_the_recipient(
    smtp_server: SmtpTestServer,
) -> None:
    smtp_server.refuse_sender("530 5.7.0 Authentication required")
    with pytest.raises(SmtpSenderRefused, match="530") as refused:
        SmtpEmailSender(settings_for(smtp_server)).send(short_email())
    assert isinstance(refused.value, ServerRefused)
    assert isinstance(refused.value, TransientError)
    assert refused.value.code == 530
    assert smtp_server.messages == []


def test_a_550_to_rcpt_to_is_permanent_for_that_recipient(smtp_server: SmtpTestServer) -> None:
    smtp_server.refuse_recipients("550 5.1.1 No such user")
    with pytest.raises(SmtpRejected, match="No such user") as refused:
        SmtpEmailSender(settings_for(smtp_server)).send(short_email())
    assert refused.value.code == 550


def test_a_530_to_rcpt_to_is_a_server_refusal(smtp_server: SmtpTestServer) -> None:
    smtp_server.refuse_recipients("530 5.7.0 Authentication required")
    with pytest.raises(SmtpSenderRefused):
        SmtpEmailSender(settings_for(smtp_server)).send(short_email())


def test_a_message_with_leading_dots_arrives_unchanged(smtp_server: SmtpTestServer) -> None:
    email = short_email()
    body = email.data.replace(b"hello", b".hello\r\n..two dots\r\n.")
    sender = SmtpEmailSender(settings_for(smtp_server))
    sender.send(dataclasses.replace(email, data=body))
    assert smtp_server.messages[0].raw.replace(b"\r\n", b"\n") == body.replace(b"\r\n", b"\n")


def test_a_restarted_server_is_reconnected_to(smtp_server: SmtpTestServer) -> None:
    sender = SmtpEmailSender(settings_for(smtp_server))
    sender.send(short_email())
    smtp_server.stop()
    smtp_server.start()
    # Within the idle window there is no NOOP: the send itself breaks on the dead connection,
    # which is replaced and the email sent once on the fresh one.
    sender.send(short_email())
    assert len(smtp_server.messages) == 2


def test_starttls_verifies_the_certificate(tmp_path: Path) -> None:
    """A server whose certificate no trusted CA signed is refused, not trusted."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert, key = _self_signed(tmp_path)
    context.load_cert_chain(cert, key)
    server = SmtpTestServer(tls_context=context, require_starttls=True)
    server.start()
    try:
        sender = SmtpEmailSender(settings_for(server, starttls=True))
        with pytest.raises(SmtpUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            sender.send(short_email())
        assert server.messages == []
    finally:
        server.stop()


def test_a_refused_login_is_a_transient_session_error_not_a_verdict_on_theshort_email() -> None:
    with smtp_server_requiring_login("mailer", "right-password") as server:
        settings = SmtpSettings(
            host=server.host,
            port=server.port,
            username="mailer",
            password="wrong-password",
            starttls=False,
            timeout_s=5.0,
        )
        with pytest.raises(SmtpSessionRefused, match="535") as refused:
            SmtpEmailSender(settings).send(short_email())
        assert isinstance(refused.value, TransientError)
        assert "wrong-password" not in str(refused.value)
        assert server.messages == []

        sender = SmtpEmailSender(dataclasses.replace(settings, password="right-password"))
        sender.send(short_email())
        assert len(server.messages) == 1
        sender.close_all()


def test_login_to_a_server_without_auth_is_a_transient_session_error(
    smtp_server: SmtpTestServer,
) -> None:
    sender = SmtpEmailSender(settings_for(smtp_server, username="mailer", password="pw"))
    with pytest.raises(SmtpSessionRefused):
        sender.send(short_email())
    assert smtp_server.messages == []


def test_starttls_required_but_not_offered_is_a_transient_session_error(
    smtp_server: SmtpTestServer,
) -> None:
    sender = SmtpEmailSender(settings_for(smtp_server, starttls=True))
    with pytest.raises(SmtpSessionRefused, match="STARTTLS"):
        sender.send(short_email())


def test_close_all_quits_every_connection(
    smtp_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    quits = []
    real_quit = smtplib.SMTP.quit

    def counting_quit(connection: smtplib.SMTP) -> tuple[int, bytes]:
        quits.append(connection)
        return real_quit(connection)

    monkeypatch.setattr(smtplib.SMTP, "quit", counting_quit)
    smtp_server.set_latency(0.2)
    sender = SmtpEmailSender(settings_for(smtp_server), max_connections=3)
    threads = [threading.Thread(target=sender.send, args=(short_email(),)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sender.open_connections == 3
    sender.close_all()
    assert len({id(c) for c in quits}) == 3, "every pool connection must say QUIT"
    assert all(c.sock is None for c in quits)
    assert sender.open_connections == 0
    assert len(smtp_server.messages) == 3


def test_close_all_leaves_a_send_in_progress_to_finish_and_then_quits_its_connection(
    smtp_server: SmtpTestServer,
) -> None:
    # A worker shutting down past its shutdown timeout closes the sender while a pool thread is
    # still mid-transaction. A QUIT on that connection would take the reply meant for the
    # transaction and drop the session under it: the email would fail, or be left "maybe sent"
    # after it was accepted, and be sent a second time later.
    smtp_server.stall_recipients(1.0)
    sender = SmtpEmailSender(settings_for(smtp_server))
    failures: list[BaseException] = []

    def send() -> None:
        try:
            sender.send(short_email())
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            failures.append(error)

    thread = threading.Thread(target=send)
    thread.start()
    wait_until(lambda: smtp_server.recipients_stalled == 1, what="the send to reach RCPT TO")
    sender.close_all()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert failures == []
    assert len(smtp_server.messages) == 1
    # Its own thread said QUIT once the transaction ended, instead of keeping it for reuse.
    assert sender.open_connections == 0


def _self_signed(folder: Path) -> tuple[str, str]:
    base = folder
    cert, key = base / "cert.pem", base / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def test_a_send_waits_while_every_connection_is_reserved(smtp_server: SmtpTestServer) -> None:
    sender = SmtpEmailSender(settings_for(smtp_server), max_connections=1)
    sent = threading.Event()

    def send_elsewhere() -> None:
        sender.send(short_email())
        sent.set()

    with sender.reserved():
        other = threading.Thread(target=send_elsewhere)
        other.start()
        assert not sent.wait(0.3), "a send went out while the only connection was reserved"
        sender.send(short_email())  # the holder's own send does not wait for itself
    assert sent.wait(10)
    other.join()
    assert len(smtp_server.messages) == 2
    assert sender.connections_opened == 1
    sender.close_all()
