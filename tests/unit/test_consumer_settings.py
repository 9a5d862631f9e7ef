"""The worker's settings from the environment: defaults, checks, secrets."""

from __future__ import annotations

import pytest

from email_consumer.settings import consumer_settings, parse_mail_from
from shared.errors import ConfigError
from shared.settings import Environment
from shared.topology import DEFAULT_RETRY_DELAYS_S


def test_defaults_serve_a_local_run() -> None:
    settings = consumer_settings(Environment({}))
    assert (settings.smtp.host, settings.smtp.port) == ("localhost", 1025)
    assert settings.smtp.starttls is False
    assert settings.smtp.timeout_s == 10
    assert str(settings.mail_from) == "Example <welcome@example.com>"
    assert settings.database_url == "sqlite:///var/email_consumer.sqlite3"
    assert settings.retry.broker_delays_s == DEFAULT_RETRY_DELAYS_S
    assert settings.worker.prefetch == settings.worker.concurrency
    assert settings.metrics_port == 0


def test_worker_and_retry_variables_are_read() -> None:
    settings = consumer_settings(
        Environment(
            {
                "WORKER_CONCURRENCY": "8",
                "RETRY_DELAYS_S": "1, 2",
                "RETRY_ATTEMPTS": "2",
                "SMTP_STARTTLS": "true",
                "METRICS_PORT": "9100",
            }
        )
    )
    assert settings.worker.concurrency == 8
    assert settings.worker.prefetch == 8
    assert settings.retry.broker_delays_s == (1, 2)
    assert settings.retry.attempts == 2
    assert settings.smtp.starttls is True
    assert settings.metrics_port == 9100


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SMTP_PORT", "smtp"),
        ("WORKER_CONCURRENCY", "0"),
        ("RETRY_DELAYS_S", "1,-2"),
        ("SMTP_STARTTLS", "maybe"),
        ("MAIL_FROM", "not an address"),
        ("MAIL_FROM", "Evil <a@b.example>\r\nBcc: x@y.example"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        consumer_settings(Environment({name: value}))


def test_secrets_cover_passwords_of_smtp_broker_and_database() -> None:
    settings = consumer_settings(
        Environment(
            {
                "SMTP_PASSWORD": "smtp-secret",
                "AMQP_URL": "amqp://u:amqp-secret@host/%2F",
                "CONSUMER_DATABASE_URL": "postgresql://u:db-secret@host/db",
            }
        )
    )
    assert sorted(settings.secrets()) == ["amqp-secret", "db-secret", "smtp-secret"]


def test_mail_from_accepts_a_bare_address() -> None:
    address = parse_mail_from("noreply@example.org")
    assert address.addr_spec == "noreply@example.org"
    assert address.domain == "example.org"


def test_a_claim_lease_shorter_than_a_send_is_refused() -> None:
    with pytest.raises(ConfigError, match="WORKER_CLAIM_LEASE_S"):
        consumer_settings(Environment({"SMTP_TIMEOUT_S": "30", "WORKER_CLAIM_LEASE_S": "60"}))
