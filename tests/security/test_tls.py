"""TLS always verifies: the broker over amqps:// and the mail server over STARTTLS.

Each test makes its own certificate authority, so "trusted" means exactly the CA the test
hands to the client; a certificate from another CA, or for another host name, is refused.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from email_consumer.errors import SmtpUnavailable
from email_consumer.ports import RenderedEmail
from email_consumer.settings import SmtpSettings
from email_consumer.smtp_sender import SmtpEmailSender
from shared.amqp import BrokerUnavailable, open_connection
from shared.settings import BrokerSettings, Environment, broker_settings
from tests.security.certificates import TestAuthority
from tests.support.rabbit_node import RabbitNode, TlsFiles
from tests.support.smtp import SmtpTestServer

# --- AMQP over TLS --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authorities(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestAuthority, TestAuthority]:
    folder = tmp_path_factory.mktemp("pki")
    return TestAuthority(folder / "trusted", "Trusted Test CA"), TestAuthority(
        folder / "other", "Other Test CA"
    )


@pytest.fixture(scope="module")
def tls_node(authorities: tuple[TestAuthority, TestAuthority]) -> Iterator[RabbitNode]:
    trusted, _other = authorities
    # The broker's certificate names `localhost` only, not 127.0.0.1.
    issued = trusted.issue("localhost")
    node = RabbitNode(
        tls=TlsFiles(ca_file=trusted.ca_file, cert_file=issued.cert_file, key_file=issued.key_file)
    )
    try:
        node.start()
        yield node
    finally:
        node.destroy()


def _settings(url: str, ca_file: Path | None) -> BrokerSettings:
    values = {"AMQP_URL": url}
    if ca_file is not None:
        values["AMQP_TLS_CA_FILE"] = str(ca_file)
    return broker_settings(Environment(values))


@pytest.mark.private_node
def test_amqps_with_the_right_ca_and_host_name_connects(
    tls_node: RabbitNode, authorities: tuple[TestAuthority, TestAuthority]
) -> None:
    trusted, _other = authorities
    connection = open_connection(_settings(tls_node.amqps_url("localhost"), trusted.ca_file))
    try:
        channel = connection.channel()
        channel.queue_declare("over-tls", durable=False, exclusive=True)
    finally:
        connection.close()


@pytest.mark.private_node
@pytest.mark.parametrize(
    ("host", "which_ca"),
    [
        pytest.param("localhost", "other", id="certificate-from-another-ca"),
        pytest.param("localhost", None, id="test-ca-not-in-the-system-store"),
        pytest.param("127.0.0.1", "trusted", id="certificate-for-another-host-name"),
    ],
)
def test_amqps_refuses_a_certificate_it_cannot_verify(
    tls_node: RabbitNode,
    authorities: tuple[TestAuthority, TestAuthority],
    host: str,
    which_ca: str | None,
) -> None:
    trusted, other = authorities
    ca_file = {"trusted": trusted.ca_file, "other": other.ca_file, None: None}[which_ca]
    url = tls_node.amqps_url(host).replace("guest:guest", "guest:tls-secret-pw")
    with pytest.raises(BrokerUnavailable) as refused:
        open_connection(_settings(url, ca_file))
    # The refusal names the masked URL, never the password.
    assert "tls-secret-pw" not in str(refused.value)


# --- SMTP STARTTLS ------------------------------------------------------------------------


def _server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


def _welcome() -> RenderedEmail:
    message = EmailMessage(policy=SMTP)
    message["From"] = "welcome@example.com"
    message["To"] = "alice@example.com"
    message["Subject"] = "Welcome"
    message.set_content("hello")
    return RenderedEmail("welcome@example.com", "alice@example.com", message.as_bytes(), "")


def _sender(port: int, host: str = "localhost") -> SmtpEmailSender:
    return SmtpEmailSender(
        SmtpSettings(host=host, port=port, username="", password="", starttls=True, timeout_s=10.0)
    )


@pytest.fixture
def starttls_server(authorities: tuple[TestAuthority, TestAuthority]) -> Iterator[SmtpTestServer]:
    trusted, _other = authorities
    issued = trusted.issue("localhost")
    server = SmtpTestServer(
        tls_context=_server_context(issued.cert_file, issued.key_file), require_starttls=True
    )
    server.start()
    yield server
    server.stop()


def test_starttls_with_a_trusted_certificate_delivers(
    starttls_server: SmtpTestServer,
    authorities: tuple[TestAuthority, TestAuthority],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trusted, _other = authorities
    # The adapter trusts the system's store; OpenSSL reads SSL_CERT_FILE to locate it.
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted.ca_file))
    sender = _sender(starttls_server.port)
    try:
        sender.send(_welcome())
    finally:
        sender.close_all()
    (received,) = starttls_server.wait_for(1)
    assert received.message["Subject"] == "Welcome"


@pytest.mark.parametrize(
    ("host", "trust"),
    [
        pytest.param("localhost", "other", id="certificate-from-another-ca"),
        pytest.param("localhost", "system", id="test-ca-not-in-the-system-store"),
        pytest.param("127.0.0.1", "trusted", id="certificate-for-another-host-name"),
    ],
)
def test_starttls_refuses_a_certificate_it_cannot_verify(
    starttls_server: SmtpTestServer,
    authorities: tuple[TestAuthority, TestAuthority],
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    trust: str,
) -> None:
    trusted, other = authorities
    if trust != "system":
        ca = trusted if trust == "trusted" else other
        monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    sender = _sender(starttls_server.port, host=host)
    try:
        with pytest.raises(SmtpUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            sender.send(_welcome())
    finally:
        sender.close_all()
    assert starttls_server.messages == []
