"""The worker's settings from the environment: defaults, checks, secrets."""

from __future__ import annotations

import pytest

from email_consumer.settings import ConsumerSettings, parse_mail_from
from shared.errors import ConfigError
from shared.settings import Environment
from shared.topology import DEFAULT_RETRY_DELAYS_S


def test_defaults_serve_a_local_run() -> None:
    settings = ConsumerSettings.from_env(Environment({}))
    assert (settings.smtp.host, settings.smtp.port) == ("localhost", 1025)
    assert settings.smtp.starttls is False
    assert settings.smtp.timeout_s == 10
    assert str(settings.mail_from) == "Example <welcome@example.com>"
    assert settings.database_url == "sqlite:///var/email_consumer.sqlite3"
    assert settings.retry.broker_delays_s == DEFAULT_RETRY_DELAYS_S
    assert settings.worker.prefetch == 3 * settings.worker.concurrency
    assert settings.metrics.port == 0
    assert settings.metrics.address == "127.0.0.1"
    assert settings.worker.processed_retention_s == 30 * 24 * 3600


def test_worker_and_retry_variables_are_read() -> None:
    settings = ConsumerSettings.from_env(
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
    assert settings.worker.prefetch == 24  # three times the concurrency unless set
    assert settings.retry.broker_delays_s == (1, 2)
    assert settings.retry.attempts == 2
    assert settings.smtp.starttls is True
    assert settings.metrics.port == 9100


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SMTP_PORT", "smtp"),
        ("SMTP_PORT", "0"),
        ("SMTP_PORT", "70000"),
        ("METRICS_PORT", "65536"),
        ("METRICS_PORT", "-1"),
        ("WORKER_PROCESSED_RETENTION_S", "0"),
        ("WORKER_CONCURRENCY", "0"),
        ("RETRY_DELAYS_S", "1,-2"),
        ("SMTP_STARTTLS", "maybe"),
        ("MAIL_FROM", "not an address"),
        ("MAIL_FROM", "Evil <a@b.example>\r\nBcc: x@y.example"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        ConsumerSettings.from_env(Environment({name: value}))


def test_secrets_cover_passwords_of_smtp_broker_and_database() -> None:
    settings = ConsumerSettings.from_env(
        Environment(
            {
                "SMTP_PASSWORD": "smtp-secret",
                "AMQP_URL": "amqp://u:amqp-secret@host/%2F",
                "CONSUMER_DATABASE_URL": "postgresql://u:db-secret@host/db",
            }
        )
    )
    assert sorted(settings.secrets()) == ["amqp-secret", "db-secret", "smtp-secret"]


def test_secrets_cover_percent_encoded_passwords_as_written_and_decoded() -> None:
    settings = ConsumerSettings.from_env(
        Environment({"AMQP_URL": "amqp://u:p%40ss%2Fword@host/%2F"})
    )
    assert {"p%40ss%2Fword", "p@ss/word"} <= set(settings.secrets())


def test_mail_from_accepts_a_bare_address() -> None:
    address = parse_mail_from("noreply@example.org")
    assert address.addr_spec == "noreply@example.org"
    assert address.domain == "example.org"


def test_a_claim_lease_shorter_than_a_send_is_refused() -> None:
    with pytest.raises(ConfigError, match="WORKER_CLAIM_LEASE_S"):
        ConsumerSettings.from_env(
            Environment({"SMTP_TIMEOUT_S": "30", "WORKER_CLAIM_LEASE_S": "60"})
        )


def test_the_claim_lease_must_cover_the_commands_and_the_wait_for_the_final_reply() -> None:
    # About ten socket operations bounded by SMTP_TIMEOUT_S, then the reply to the final dot.
    env = {"SMTP_TIMEOUT_S": "10", "SMTP_FINAL_REPLY_TIMEOUT_S": "60"}
    with pytest.raises(
        ConfigError, match=r"at least 11 x SMTP_TIMEOUT_S \+ SMTP_FINAL_REPLY_TIMEOUT_S \(170\)"
    ):
        ConsumerSettings.from_env(Environment({**env, "WORKER_CLAIM_LEASE_S": "169"}))
    settings = ConsumerSettings.from_env(Environment({**env, "WORKER_CLAIM_LEASE_S": "170"}))
    assert settings.worker.claim_lease_s == 170
    defaults = ConsumerSettings.from_env(Environment({}))
    assert defaults.smtp.final_reply_timeout_s == 600  # RFC 5321 §4.5.3.2.6
    assert defaults.worker.claim_lease_s == 900  # 11 x 10 + 600 fits


def test_the_final_reply_timeout_is_no_shorter_than_the_command_timeout() -> None:
    with pytest.raises(ConfigError, match="SMTP_FINAL_REPLY_TIMEOUT_S"):
        ConsumerSettings.from_env(
            Environment({"SMTP_TIMEOUT_S": "10", "SMTP_FINAL_REPLY_TIMEOUT_S": "5"})
        )


def test_the_uncertain_resend_waits_for_the_longest_retry_delay_by_default() -> None:
    assert ConsumerSettings.from_env(Environment({})).worker.uncertain_resend_after_s == 300
    settings = ConsumerSettings.from_env(
        Environment({"RETRY_DELAYS_S": "1,20", "WORKER_UNCERTAIN_RESEND_AFTER_S": "7"})
    )
    assert settings.worker.uncertain_resend_after_s == 7
    assert (
        ConsumerSettings.from_env(
            Environment({"RETRY_DELAYS_S": "1,20"})
        ).worker.uncertain_resend_after_s
        == 20
    )


def test_breaker_settings_are_read_and_checked() -> None:
    settings = ConsumerSettings.from_env(
        Environment({"WORKER_BREAKER_THRESHOLD": "3", "WORKER_BREAKER_PROBE_S": "2.5"})
    )
    assert (settings.worker.breaker_threshold, settings.worker.breaker_probe_s) == (3, 2.5)
    defaults = ConsumerSettings.from_env(Environment({})).worker
    assert (defaults.breaker_threshold, defaults.breaker_probe_s) == (5, 30)
    with pytest.raises(ConfigError, match="WORKER_BREAKER_THRESHOLD"):
        ConsumerSettings.from_env(Environment({"WORKER_BREAKER_THRESHOLD": "0"}))
    with pytest.raises(ConfigError, match="WORKER_BREAKER_PROBE_S"):
        ConsumerSettings.from_env(Environment({"WORKER_BREAKER_PROBE_S": "0"}))


@pytest.mark.parametrize("host", ["smtp.example.com", "10.0.0.5", "2001:db8::1"])
def test_a_login_without_starttls_to_a_remote_server_is_refused(host: str) -> None:
    with pytest.raises(ConfigError, match="SMTP_STARTTLS") as refused:
        ConsumerSettings.from_env(
            Environment({"SMTP_HOST": host, "SMTP_USERNAME": "mailer", "SMTP_PASSWORD": "pw-1"})
        )
    assert "pw-1" not in str(refused.value)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.2", "::1", "[::1]"])
def test_a_login_without_starttls_is_allowed_on_the_loopback(host: str) -> None:
    settings = ConsumerSettings.from_env(
        Environment({"SMTP_HOST": host, "SMTP_USERNAME": "mailer", "SMTP_PASSWORD": "pw"})
    )
    assert settings.smtp.username == "mailer"


def test_a_login_with_starttls_to_a_remote_server_is_allowed() -> None:
    settings = ConsumerSettings.from_env(
        Environment(
            {
                "SMTP_HOST": "smtp.example.com",
                "SMTP_USERNAME": "mailer",
                "SMTP_STARTTLS": "true",
            }
        )
    )
    assert settings.smtp.starttls


def test_the_metrics_address_is_configurable() -> None:
    settings = ConsumerSettings.from_env(Environment({"METRICS_ADDRESS": "0.0.0.0"}))
    assert settings.metrics.address == "0.0.0.0"


def test_a_stuck_worker_is_one_past_its_claim_lease_unless_told() -> None:
    assert ConsumerSettings.from_env(Environment({})).metrics.liveness_timeout_s == 900
    told = ConsumerSettings.from_env(Environment({"LIVENESS_TIMEOUT_S": "5"}))
    assert told.metrics.liveness_timeout_s == 5
