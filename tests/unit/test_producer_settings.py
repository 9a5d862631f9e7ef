"""The registration service's settings: defaults for a local run, overrides, clear errors."""

from __future__ import annotations

import pytest

from producer_service.settings import ProducerSettings
from shared.errors import ConfigError
from shared.settings import Environment


def test_defaults_serve_a_local_run() -> None:
    settings = ProducerSettings.from_env(Environment({}))

    assert settings.database_url == "sqlite:///var/producer.sqlite3"
    assert settings.broker.amqp_url == "amqp://guest:guest@localhost:5672/%2F"
    assert settings.relay.batch_size == 500
    assert settings.relay.retention_s == 7 * 24 * 3600
    assert settings.relay.confirm_timeout_s == 10.0
    # A live relay's batch (a confirm wait, closing a timed-out connection, the marks) ends well
    # inside its claim's lease, so no other relay takes it over.
    assert settings.relay.claim_lease_s >= 2 * settings.relay.confirm_timeout_s + 5


def test_every_variable_read_is_a_producer_relay_or_shared_one() -> None:
    env = Environment(
        {
            "PRODUCER_DATABASE_URL": "postgresql://db/producer",
            "RELAY_BATCH_SIZE": "50",
            "RELAY_POLL_INTERVAL_S": "0.5",
            "RELAY_RETENTION_S": "0",
            "RELAY_CONFIRM_TIMEOUT_S": "5",
        }
    )

    settings = ProducerSettings.from_env(env)

    assert settings.database_url == "postgresql://db/producer"
    assert (settings.relay.batch_size, settings.relay.poll_interval_s) == (50, 0.5)
    assert (settings.relay.retention_s, settings.relay.confirm_timeout_s) == (0, 5.0)
    own = {name for name in env.names_read if name.startswith(("PRODUCER_", "RELAY_"))}
    shared = env.names_read - own
    # METRICS_PORT, METRICS_ADDRESS and LIVENESS_TIMEOUT_S: the endpoint both services serve;
    # OTEL_*: OpenTelemetry's standard variables, the same for both.
    shared_prefixes = ("AMQP_", "LOG_", "METRICS_", "LIVENESS_", "OTEL_")
    assert all(name.startswith(shared_prefixes) for name in shared), shared


def test_the_relay_serves_nothing_unless_told_and_then_on_loopback() -> None:
    metrics = ProducerSettings.from_env(Environment({})).metrics
    assert (metrics.port, metrics.address, metrics.liveness_timeout_s) == (0, "127.0.0.1", 120)
    told = ProducerSettings.from_env(Environment({"METRICS_PORT": "9100"})).metrics
    assert told.port == 9100


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RELAY_BATCH_SIZE", "0", "RELAY_BATCH_SIZE must be at least 1"),
        ("RELAY_POLL_INTERVAL_S", "soon", "RELAY_POLL_INTERVAL_S must be a number"),
        ("RELAY_RETENTION_S", "-1", "RELAY_RETENTION_S must be at least 0"),
    ],
)
def test_a_bad_value_names_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ProducerSettings.from_env(Environment({name: value}))
