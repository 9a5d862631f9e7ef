"""Connecting to RabbitMQ: parameters, TLS that always verifies, and URLs safe to log."""

from __future__ import annotations

import ssl
from urllib.parse import unquote, urlsplit, urlunsplit

import pika
import pika.exceptions

from shared.errors import ConfigError, TransientError
from shared.logging import get_logger
from shared.settings import BrokerSettings

_log = get_logger(__name__)


class BrokerUnavailable(TransientError):
    """The broker could not be reached or dropped the connection."""


def mask_url(url: str) -> str:
    """The URL with its password replaced by `***`, for logs and error messages.

    Never raises: a URL too malformed to take apart is masked whole after its scheme.
    """
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user, _, _ = parts.netloc.rpartition("@")[0].partition(":")
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        scheme = url.partition("://")[0] if "://" in url else "url"
        return f"{scheme}://***"


def url_secrets(url: str) -> list[str]:
    """The password in `url`, as written and percent-decoded, for log redaction."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    if not password:
        return []
    return sorted({password, unquote(password)})


def connection_parameters(settings: BrokerSettings) -> pika.URLParameters:
    """Parameters with heartbeat, blocked-connection timeout and, for amqps://, verified TLS."""
    try:
        parameters = pika.URLParameters(settings.amqp_url)
    except Exception as error:  # noqa: BLE001 - pika raises many types for a bad URL
        # The message of pika's error may quote the URL, password and all.
        raise ConfigError(f"AMQP_URL is not a valid AMQP URL ({type(error).__name__})") from None
    parameters.heartbeat = settings.heartbeat_s
    parameters.blocked_connection_timeout = settings.blocked_connection_timeout_s
    # Reconnection is ours to manage (with backoff and logging), not pika's silent retries.
    parameters.connection_attempts = 1
    parameters.socket_timeout = 10
    if urlsplit(settings.amqp_url).scheme == "amqps":
        parameters.ssl_options = pika.SSLOptions(
            _verifying_tls_context(settings), server_hostname=parameters.host
        )
    return parameters


def _verifying_tls_context(settings: BrokerSettings) -> ssl.SSLContext:
    # create_default_context verifies the certificate chain and the host name; nothing here
    # turns either off. A private CA is added, never substituted for verification.
    try:
        context = ssl.create_default_context(cafile=settings.tls_ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if settings.tls_cert_file:
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as error:
        # A missing or unreadable file is a configuration error, not a broker outage.
        raise ConfigError(f"AMQP TLS files cannot be loaded: {error}") from None
    return context


def open_connection(settings: BrokerSettings) -> pika.BlockingConnection:
    """A blocking connection, or `BrokerUnavailable` naming the masked URL."""
    masked = mask_url(settings.amqp_url)
    parameters = connection_parameters(settings)
    try:
        connection = pika.BlockingConnection(parameters)
    except (pika.exceptions.AMQPError, OSError, ssl.SSLError) as error:
        raise BrokerUnavailable(
            f"cannot connect to {masked}: {type(error).__name__}: {error}".rstrip(": ")
        ) from None
    _log.info("broker connected", url=masked, heartbeat_s=settings.heartbeat_s)
    return connection
