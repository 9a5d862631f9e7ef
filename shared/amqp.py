"""Connecting to RabbitMQ: parameters, TLS that always verifies, and URLs safe to log.

AMQP_URL may list the nodes of a cluster, comma-separated, with the same credentials and vhost;
`open_connection` fails over from one node to the next (in the order `shared.failover` keeps),
so every command that connects survives a node that is down.
"""

from __future__ import annotations

import contextlib
import ssl
from urllib.parse import unquote, urlsplit, urlunsplit

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import (
    AMQPConnectorException,
    AMQPConnectorStackTimeout,
)

from shared.errors import ConfigError, TransientError
from shared.failover import rotation_for
from shared.logging import get_logger
from shared.settings import BrokerSettings, split_urls

_log = get_logger(__name__)


class BrokerUnavailable(TransientError):
    """The broker could not be reached or dropped the connection."""


class BrokerRefused(BrokerUnavailable):
    """The broker answered but refused the credentials or the virtual host in AMQP_URL.

    Configuration, not an outage: a service starting with it exits 2. It stays a
    `BrokerUnavailable` so that a service already running keeps retrying (an operator may be
    fixing the user or vhost), logging each refused attempt as an error.
    """


def failure_reason(error: BaseException | str) -> str:
    """Why a connection attempt failed, in a few words (pika nests the real cause deeply).

    Never quotes the URL: pika's messages name host, port and vhost at most, and the caller
    adds the masked URL.
    """
    if isinstance(error, str):
        return error
    if isinstance(error, pika.exceptions.ProbableAuthenticationError):
        return "the broker refused the user name or password (ACCESS_REFUSED)"
    if isinstance(error, pika.exceptions.ProbableAccessDeniedError):
        return "the broker refused the virtual host: it does not exist or the user has no access"
    cause = _innermost(error)
    if isinstance(cause, AMQPConnectorStackTimeout):
        # Its text dumps pika's address tuple; what it means is short.
        return "no AMQP answer in time (the node accepts connections but does not reply)"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    text = str(cause).strip()
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _innermost(error: BaseException) -> BaseException:
    """The exception at the bottom of pika's wrappers (`args[0]`, `exception`, `exceptions[-1]`)."""
    for _ in range(10):  # bounded: a cycle in args must not hang a failure report
        nested = getattr(error, "exceptions", None)
        wrapped = getattr(error, "exception", None)  # pika's AMQPConnector*Error
        if isinstance(nested, list | tuple) and nested and isinstance(nested[-1], BaseException):
            error = nested[-1]
        elif isinstance(wrapped, BaseException):
            error = wrapped
        elif error.args and isinstance(error.args[0], BaseException):
            error = error.args[0]
        else:
            break
    return error


def connection_failed(masked_url: str, error: BaseException | str) -> BrokerUnavailable:
    """The error to raise for a failed connection attempt: refused, or unavailable."""
    kind = BrokerRefused if _refused(error) else BrokerUnavailable
    return kind(f"cannot connect to {masked_url} (AMQP_URL): {failure_reason(error)}")


def _refused(error: BaseException | str) -> bool:
    return isinstance(
        error,
        pika.exceptions.ProbableAuthenticationError | pika.exceptions.ProbableAccessDeniedError,
    )


def mask_url(url: str) -> str:
    """The URL (each URL of a list) with its password replaced by `***`, for logs and errors.

    Never raises: a URL too malformed to take apart is masked whole after its scheme.
    """
    if "," in url:
        return ",".join(_mask_one(part) for part in split_urls(url))
    return _mask_one(url)


def _mask_one(url: str) -> str:
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
    """The passwords in `url` (each URL of a list), as written and percent-decoded, for log
    redaction."""
    found: set[str] = set()
    for part in split_urls(url):
        try:
            password = urlsplit(part).password
        except ValueError:
            continue
        if password:
            found |= {password, unquote(password)}
    return sorted(found)


def connection_parameters(settings: BrokerSettings) -> pika.URLParameters:
    """Parameters for the node the last connection reached (see `shared.failover`), with
    heartbeat, blocked-connection timeout and, for amqps://, verified TLS.

    Checks every URL of AMQP_URL, so that a bad one is reported at start-up, not at the
    failover that first needs it.
    """
    for url in settings.urls:
        _node_parameters(settings, url)
    return _node_parameters(settings, rotation_for(settings.urls).current())


def _node_parameters(settings: BrokerSettings, url: str) -> pika.URLParameters:
    try:
        parameters = pika.URLParameters(url)
    except Exception as error:  # noqa: BLE001 - pika raises many types for a bad URL
        # The message of pika's error may quote the URL, password and all.
        raise ConfigError(f"AMQP_URL is not a valid AMQP URL ({type(error).__name__})") from None
    parameters.heartbeat = settings.heartbeat_s
    parameters.blocked_connection_timeout = settings.blocked_connection_timeout_s
    # Reconnection is ours to manage (with backoff and logging), not pika's silent retries.
    parameters.connection_attempts = 1
    parameters.socket_timeout = 10
    if urlsplit(url).scheme == "amqps":
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


class BrokerConnection(pika.BlockingConnection):  # type: ignore[misc]  # pika is untyped
    """A blocking connection that knows how many nodes AMQP_URL lists.

    The topology reads it to give new quorum queues an explicit replica count on a cluster.
    """

    def __init__(self, parameters: pika.URLParameters, *, listed_nodes: int) -> None:
        super().__init__(parameters)
        self.listed_nodes = listed_nodes


def open_connection(settings: BrokerSettings, *, announce: bool = True) -> BrokerConnection:
    """A blocking connection to the first node of AMQP_URL that answers, or `BrokerUnavailable`
    naming each masked URL tried and why it failed (`BrokerRefused` if any node refused the
    credentials or vhost and none accepted them).

    `announce` logs "broker connected"; a check that closes the connection at once does not,
    so that the line counts the connections a service works on.
    """
    connection_parameters(settings)  # every URL checked before any is tried
    rotation = rotation_for(settings.urls)
    failures: list[tuple[str, BaseException]] = []
    for url in rotation.to_try():
        masked = mask_url(url)
        try:
            connection = BrokerConnection(
                _node_parameters(settings, url), listed_nodes=rotation.size
            )
        # AMQPConnectorException is no AMQPError: pika raises it bare for a node that accepts
        # TCP and never completes the handshake (frozen, overloaded), after its stack timeout.
        # ValueError: pika's "Expected connected socket, but getpeername() failed", for a node
        # that dies between accepting TCP and the handshake (the URL was checked above).
        except (
            pika.exceptions.AMQPError,
            AMQPConnectorException,
            OSError,
            ssl.SSLError,
            ValueError,
        ) as error:
            failures.append((masked, error))
            if rotation.size > 1:
                _log.warning("broker node unavailable", url=masked, error=failure_reason(error))
            continue
        rotation.reached(url)
        if announce:
            _log.info("broker connected", url=masked, heartbeat_s=settings.heartbeat_s)
        return connection
    raise _every_node_failed(failures)


def _every_node_failed(failures: list[tuple[str, BaseException]]) -> BrokerUnavailable:
    if len(failures) == 1:
        return connection_failed(*failures[0])
    # The nodes of one cluster share users and vhosts: one refusal is the configuration's.
    kind = BrokerRefused if any(_refused(error) for _, error in failures) else BrokerUnavailable
    reasons = "; ".join(f"{masked}: {failure_reason(error)}" for masked, error in failures)
    return kind(f"cannot connect to any node of AMQP_URL: {reasons}")


def refuse_bad_credentials(settings: BrokerSettings) -> None:
    """At start-up: `BrokerRefused` if the broker refuses AMQP_URL's user or vhost.

    One connection, closed at once. A broker that cannot be reached passes: the service then
    waits for it, as it would for any outage.
    """
    try:
        connection = open_connection(settings, announce=False)
    except BrokerRefused:
        raise
    except BrokerUnavailable:
        return
    with contextlib.suppress(pika.exceptions.AMQPError, OSError):
        connection.close()
