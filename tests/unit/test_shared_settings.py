"""Settings from the environment: defaults, one clear error per bad value, no secret leaked."""

from __future__ import annotations

import ssl

import pytest

from shared.amqp import connection_parameters, mask_url, url_secrets
from shared.errors import ConfigError
from shared.settings import (
    DEFAULT_AMQP_URL,
    Environment,
    broker_settings,
    logging_settings,
)


def test_defaults_serve_a_local_run() -> None:
    env = Environment({})
    broker = broker_settings(env)
    assert broker.amqp_url == DEFAULT_AMQP_URL
    assert logging_settings(env).level == "INFO"
    assert {"AMQP_URL", "LOG_LEVEL", "LOG_FORMAT"} <= env.names_read


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"AMQP_HEARTBEAT_S": "soon"}, "AMQP_HEARTBEAT_S must be a whole number"),
        ({"AMQP_HEARTBEAT_S": "-1"}, "at least 0"),
        ({"AMQP_BLOCKED_TIMEOUT_S": "nan"}, "AMQP_BLOCKED_TIMEOUT_S"),
        ({"AMQP_URL": "http://x"}, "amqp://"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ],
)
def test_bad_values_name_the_variable(values: dict[str, str], message: str) -> None:
    def load_all() -> None:
        env = Environment(values)
        broker_settings(env)
        logging_settings(env)

    with pytest.raises(ConfigError, match=message):
        load_all()


def test_booleans_and_lists() -> None:
    env = Environment({"A": "yes", "B": "0", "C": "5, 30"})
    assert env.boolean("A", False) is True
    assert env.boolean("B", True) is False
    assert env.integers("C", ()) == (5, 30)
    with pytest.raises(ConfigError, match="D must be true or false"):
        Environment({"D": "maybe"}).boolean("D", False)


def test_mask_url_hides_only_the_password() -> None:
    assert mask_url("amqp://user:s3cret@broker:5671/vh") == "amqp://user:***@broker:5671/vh"
    assert mask_url("amqp://broker/") == "amqp://broker/"


def test_mask_url_never_raises_and_never_reveals() -> None:
    masked = mask_url("amqp://user:s3cret@broker:notaport/vh")
    assert "s3cret" not in masked


def test_url_secrets_include_the_decoded_password() -> None:
    assert url_secrets("amqp://u:p%40ss@h/") == ["p%40ss", "p@ss"]
    assert url_secrets("amqp://h/") == []


def test_ports_are_bounded() -> None:
    with pytest.raises(ConfigError, match="SMTP_PORT must be at most 65535"):
        Environment({"SMTP_PORT": "70000"}).port("SMTP_PORT", 25)
    assert Environment({"METRICS_PORT": "0"}).port("METRICS_PORT", 0, allow_zero=True) == 0


def test_missing_tls_ca_file_is_a_configuration_error() -> None:
    env = Environment({"AMQP_URL": "amqps://h/", "AMQP_TLS_CA_FILE": "/nonexistent/ca.pem"})
    with pytest.raises(ConfigError, match="TLS"):
        connection_parameters(broker_settings(env))


def test_connection_parameters_apply_heartbeat_and_verified_tls() -> None:
    env = Environment({"AMQP_URL": "amqps://u:p@broker.example:5671/%2F", "AMQP_HEARTBEAT_S": "7"})
    parameters = connection_parameters(broker_settings(env))
    assert parameters.heartbeat == 7
    assert parameters.ssl_options is not None
    context = parameters.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert parameters.ssl_options.server_hostname == "broker.example"


def test_plain_amqp_has_no_tls() -> None:
    parameters = connection_parameters(broker_settings(Environment({})))
    assert parameters.ssl_options is None
