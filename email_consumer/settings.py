"""The worker's settings, read once from the environment in the composition root.

Every variable, its default and its meaning are in docs/CONTRACT.md. Besides one check per
value, `ConsumerSettings.from_env` refuses combinations that would break a promise: a claim
lease shorter than the longest send (a second worker could send too), a final-reply timeout
shorter than the other SMTP timeouts, and an SMTP login without STARTTLS to a host other than
this machine (the password would cross the network in clear text).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.utils import parseaddr

from email_consumer import retry_policy
from email_consumer.retry_policy import RetryPolicy
from shared.amqp import url_secrets
from shared.errors import ConfigError
from shared.settings import (
    BrokerSettings,
    Environment,
    LoggingSettings,
    MetricsSettings,
    TracingSettings,
    broker_settings,
    logging_settings,
    metrics_settings,
    sqlite_default_url,
    tracing_settings,
)
from shared.topology import DEFAULT_RETRY_DELAYS_S

DEFAULT_MAIL_FROM = "Example <welcome@example.com>"
DEFAULT_PROCESSED_RETENTION_S = 30 * 24 * 3600.0
# One send is about ten socket operations (connect, greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT,
# DATA, the message), each bounded by SMTP_TIMEOUT_S, then the reply to the final dot, bounded
# by its own timeout; this many timeouts plus that one bound the longest send.
SEND_OPERATIONS_PER_LEASE = 11
# RFC 5321 §4.5.3.2.6: "DATA Termination: 10 minutes".
DEFAULT_FINAL_REPLY_TIMEOUT_S = 600.0
DEFAULT_CLAIM_LEASE_S = 900.0
# SMTP sessions in flight when WORKER_CONCURRENCY is unset. Real mail servers take tens of
# milliseconds or more per message, so the sessions, not the CPU, bound a worker at 4: against
# a 50 ms sink 4 gave 69 emails/s, 16 gave 261-271 (0.82-0.85x its ideal) and 24 or 32 no more
# than 16 within the spread (docs/PERFORMANCE.md, "Worker concurrency sweep", 2 Dec 2026).
DEFAULT_CONCURRENCY = 16
DEFAULT_BREAKER_THRESHOLD = 5
DEFAULT_BREAKER_PROBE_S = 30.0


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    username: str
    password: str
    starttls: bool
    timeout_s: float
    """Every SMTP operation but the wait for the reply to the final dot."""
    final_reply_timeout_s: float = DEFAULT_FINAL_REPLY_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    concurrency: int
    prefetch: int
    shutdown_timeout_s: float
    claim_lease_s: float
    reconnect_max_delay_s: float
    processed_retention_s: float
    uncertain_resend_after_s: float = 300.0
    breaker_threshold: int = DEFAULT_BREAKER_THRESHOLD
    breaker_probe_s: float = DEFAULT_BREAKER_PROBE_S


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    broker: BrokerSettings
    logging: LoggingSettings
    smtp: SmtpSettings
    mail_from: Address
    database_url: str
    worker: WorkerSettings
    retry: RetryPolicy
    metrics: MetricsSettings
    tracing: TracingSettings = field(default_factory=TracingSettings)

    @classmethod
    def from_env(cls, env: Environment) -> ConsumerSettings:
        """Read and check every setting; a bad value raises `ConfigError` naming the variable."""
        smtp = _smtp_settings(env)
        retry = _retry_policy(env)
        worker = _worker_settings(env, smtp, retry)
        return cls(
            broker=broker_settings(env),
            logging=logging_settings(env),
            tracing=tracing_settings(env),
            smtp=smtp,
            mail_from=parse_mail_from(env.text("MAIL_FROM", DEFAULT_MAIL_FROM)),
            database_url=env.database_url(
                "CONSUMER_DATABASE_URL", sqlite_default_url("email_consumer.sqlite3")
            ),
            worker=worker,
            retry=retry,
            # A delivery still unsettled after its claim lease has lost its claim: by then the
            # worker is stuck, not slow (the lease outlasts the longest send, SMTP timeouts and
            # all).
            metrics=metrics_settings(env, liveness_timeout_s=worker.claim_lease_s),
        )

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line (URL passwords also percent-decoded)."""
        found = [self.smtp.password]
        for url in (self.broker.amqp_url, self.database_url):
            found.extend(url_secrets(url))
        return [s for s in found if s]


def _smtp_settings(env: Environment) -> SmtpSettings:
    smtp = SmtpSettings(
        host=env.text("SMTP_HOST", "localhost"),
        port=env.port("SMTP_PORT", 1025),
        username=env.text("SMTP_USERNAME", ""),
        password=env.secret("SMTP_PASSWORD"),
        starttls=env.boolean("SMTP_STARTTLS", False),
        timeout_s=env.number("SMTP_TIMEOUT_S", 10.0, minimum=0.1),
        final_reply_timeout_s=env.number(
            "SMTP_FINAL_REPLY_TIMEOUT_S", DEFAULT_FINAL_REPLY_TIMEOUT_S, minimum=0.1
        ),
    )
    if smtp.final_reply_timeout_s < smtp.timeout_s:
        raise ConfigError(
            f"SMTP_FINAL_REPLY_TIMEOUT_S ({smtp.final_reply_timeout_s:g}) must be at least "
            f"SMTP_TIMEOUT_S ({smtp.timeout_s:g}): the server stores the message before it "
            "answers the final dot"
        )
    _refuse_cleartext_login(smtp)
    return smtp


def _retry_policy(env: Environment) -> RetryPolicy:
    return RetryPolicy(
        attempts=env.integer("RETRY_ATTEMPTS", retry_policy.DEFAULT_ATTEMPTS, minimum=1),
        initial_backoff_s=env.number(
            "RETRY_INITIAL_BACKOFF_S", retry_policy.DEFAULT_INITIAL_BACKOFF_S
        ),
        max_backoff_s=env.number("RETRY_MAX_BACKOFF_S", retry_policy.DEFAULT_MAX_BACKOFF_S),
        max_total_s=env.number("RETRY_MAX_TOTAL_S", retry_policy.DEFAULT_MAX_TOTAL_S),
        broker_delays_s=env.integers("RETRY_DELAYS_S", DEFAULT_RETRY_DELAYS_S),
    )


def _worker_settings(env: Environment, smtp: SmtpSettings, retry: RetryPolicy) -> WorkerSettings:
    concurrency = env.integer("WORKER_CONCURRENCY", DEFAULT_CONCURRENCY, minimum=1)
    claim_lease_s = env.number("WORKER_CLAIM_LEASE_S", DEFAULT_CLAIM_LEASE_S, minimum=1.0)
    longest_send_s = SEND_OPERATIONS_PER_LEASE * smtp.timeout_s + smtp.final_reply_timeout_s
    if claim_lease_s < longest_send_s:
        raise ConfigError(
            f"WORKER_CLAIM_LEASE_S ({claim_lease_s:g}) must be at least "
            f"{SEND_OPERATIONS_PER_LEASE} x SMTP_TIMEOUT_S + SMTP_FINAL_REPLY_TIMEOUT_S "
            f"({longest_send_s:g}): a claim must outlast the send it protects"
        )
    return WorkerSettings(
        concurrency=concurrency,
        # More than the pool's 2 x concurrency threads: a thread that finishes finds the
        # next delivery already here instead of waiting a round trip to the broker for it.
        prefetch=env.integer("WORKER_PREFETCH", 3 * concurrency, minimum=1),
        shutdown_timeout_s=env.number("WORKER_SHUTDOWN_TIMEOUT_S", 30.0),
        claim_lease_s=claim_lease_s,
        reconnect_max_delay_s=env.number("WORKER_RECONNECT_MAX_DELAY_S", 30.0, minimum=0.1),
        processed_retention_s=env.number(
            "WORKER_PROCESSED_RETENTION_S", DEFAULT_PROCESSED_RETENTION_S, minimum=1.0
        ),
        # An email that may have been sent is resent once, after the longest broker delay.
        uncertain_resend_after_s=env.number(
            "WORKER_UNCERTAIN_RESEND_AFTER_S",
            float(max(retry.broker_delays_s, default=300)),
            minimum=0.0,
        ),
        breaker_threshold=env.integer(
            "WORKER_BREAKER_THRESHOLD", DEFAULT_BREAKER_THRESHOLD, minimum=1
        ),
        breaker_probe_s=env.number("WORKER_BREAKER_PROBE_S", DEFAULT_BREAKER_PROBE_S, minimum=0.1),
    )


def _refuse_cleartext_login(smtp: SmtpSettings) -> None:
    """A login without STARTTLS is allowed only where the password stays on this machine."""
    if smtp.username and not smtp.starttls and not is_loopback(smtp.host):
        raise ConfigError(
            "SMTP_USERNAME is set but SMTP_STARTTLS is false: the password would cross the "
            f"network in clear text to {smtp.host!r}; set SMTP_STARTTLS=true"
        )


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine: `localhost` or a loopback IP address."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
