"""The worker's settings, read once from the environment in the composition root.

Contract variables (CONTRACT.md): SMTP_HOST, SMTP_PORT, SMTP_USERNAME, SMTP_PASSWORD,
SMTP_STARTTLS, SMTP_TIMEOUT_S, MAIL_FROM, CONSUMER_DATABASE_URL, AMQP_*, LOG_*.
The worker's own (with defaults):

| variable | default | meaning |
| --- | --- | --- |
| WORKER_CONCURRENCY | 4 | events handled at once (threads) |
| WORKER_PREFETCH | = WORKER_CONCURRENCY | unacknowledged deliveries the broker sends ahead |
| WORKER_SHUTDOWN_TIMEOUT_S | 30 | on SIGTERM, how long in-flight events may finish |
| WORKER_CLAIM_LEASE_S | 300 | how long one delivery holds an event before another may (*) |
| WORKER_RECONNECT_MAX_DELAY_S | 30 | cap of the growing delay between reconnection attempts |
| RETRY_ATTEMPTS | 4 | in-process attempts per delivery (tenacity) |
| RETRY_INITIAL_BACKOFF_S | 0.5 | first in-process backoff, doubled each retry, plus jitter |
| RETRY_MAX_BACKOFF_S | 5 | cap of one in-process backoff |
| RETRY_MAX_TOTAL_S | 30 | cap of the time spent on one delivery in process |
| RETRY_DELAYS_S | 5,30,300 | delayed retries through the broker, then the DLQ |
| METRICS_PORT | 0 | Prometheus endpoint port; 0 turns it off |

(*) At least 3 x SMTP_TIMEOUT_S: a lease that ended mid-send would let a second worker send too.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr
from urllib.parse import urlsplit

from email_consumer import retry_policy
from email_consumer.retry_policy import RetryPolicy
from shared.errors import ConfigError
from shared.settings import (
    BrokerSettings,
    Environment,
    LoggingSettings,
    broker_settings,
    logging_settings,
    sqlite_default_url,
)
from shared.topology import DEFAULT_RETRY_DELAYS_S

DEFAULT_MAIL_FROM = "Example <welcome@example.com>"


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    username: str
    password: str
    starttls: bool
    timeout_s: float


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    concurrency: int
    prefetch: int
    shutdown_timeout_s: float
    claim_lease_s: float
    reconnect_max_delay_s: float


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    broker: BrokerSettings
    logging: LoggingSettings
    smtp: SmtpSettings
    mail_from: Address
    database_url: str
    worker: WorkerSettings
    retry: RetryPolicy
    metrics_port: int

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line."""
        found = [self.smtp.password]
        for url in (self.broker.amqp_url, self.database_url):
            password = urlsplit(url).password
            if password:
                found.append(password)
        return [s for s in found if s]


def consumer_settings(env: Environment) -> ConsumerSettings:
    """Read and check every setting; a bad value raises `ConfigError` naming the variable."""
    concurrency = env.integer("WORKER_CONCURRENCY", 4, minimum=1)
    retry = RetryPolicy(
        attempts=env.integer("RETRY_ATTEMPTS", retry_policy.DEFAULT_ATTEMPTS, minimum=1),
        initial_backoff_s=env.number(
            "RETRY_INITIAL_BACKOFF_S", retry_policy.DEFAULT_INITIAL_BACKOFF_S
        ),
        max_backoff_s=env.number("RETRY_MAX_BACKOFF_S", retry_policy.DEFAULT_MAX_BACKOFF_S),
        max_total_s=env.number("RETRY_MAX_TOTAL_S", retry_policy.DEFAULT_MAX_TOTAL_S),
        broker_delays_s=env.integers("RETRY_DELAYS_S", DEFAULT_RETRY_DELAYS_S),
    )
    smtp = SmtpSettings(
        host=env.text("SMTP_HOST", "localhost"),
        port=env.integer("SMTP_PORT", 1025, minimum=1),
        username=env.text("SMTP_USERNAME", ""),
        password=env.secret("SMTP_PASSWORD"),
        starttls=env.boolean("SMTP_STARTTLS", False),
        timeout_s=env.number("SMTP_TIMEOUT_S", 10.0, minimum=0.1),
    )
    claim_lease_s = env.number("WORKER_CLAIM_LEASE_S", 300.0, minimum=1.0)
    # One send is a connect, a few commands and the data, each bounded by SMTP_TIMEOUT_S.
    if claim_lease_s < 3 * smtp.timeout_s:
        raise ConfigError(
            f"WORKER_CLAIM_LEASE_S ({claim_lease_s:g}) must be at least 3 x SMTP_TIMEOUT_S "
            f"({3 * smtp.timeout_s:g}): a claim must outlast the send it protects"
        )
    return ConsumerSettings(
        broker=broker_settings(env),
        logging=logging_settings(env),
        smtp=smtp,
        mail_from=parse_mail_from(env.text("MAIL_FROM", DEFAULT_MAIL_FROM)),
        database_url=env.text(
            "CONSUMER_DATABASE_URL", sqlite_default_url("email_consumer.sqlite3")
        ),
        worker=WorkerSettings(
            concurrency=concurrency,
            prefetch=env.integer("WORKER_PREFETCH", concurrency, minimum=1),
            shutdown_timeout_s=env.number("WORKER_SHUTDOWN_TIMEOUT_S", 30.0),
            claim_lease_s=claim_lease_s,
            reconnect_max_delay_s=env.number("WORKER_RECONNECT_MAX_DELAY_S", 30.0, minimum=0.1),
        ),
        retry=retry,
        metrics_port=env.integer("METRICS_PORT", 0),
    )


def parse_mail_from(value: str) -> Address:
    """`Name <addr@domain>` or a bare address, as an `Address`; refuses anything else."""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise ConfigError("MAIL_FROM contains control characters")
    display_name, addr_spec = parseaddr(value)
    if not addr_spec or "@" not in addr_spec:
        raise ConfigError(f"MAIL_FROM must be an address like 'Name <user@domain>', got {value!r}")
    try:
        return Address(display_name=display_name, addr_spec=addr_spec)
    except (ValueError, IndexError):
        raise ConfigError(f"MAIL_FROM is not a valid address: {value!r}") from None
