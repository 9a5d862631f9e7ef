"""`producer-service register` against the real broker, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess

import pytest

from shared.events import parse_user_registered
from tests.support.producer import (
    closed_port_url,
    drain_queue,
    message_ids,
    outbox_rows,
    producer_env,
    run_producer,
    start_producer,
    user_count,
)

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


def test_register_stores_the_user_and_publishes_the_event_as_the_contract_says(
    amqp_url: str, database_url: str
) -> None:
    env = producer_env(amqp_url, database_url)

    result = run_producer(
        "register", "Alice", "alice@EXAMPLE.com", "--full-name", "Alice Liddell", "--json", env=env
    )

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["username"] == "Alice"
    assert printed["email"] == "alice@example.com"  # the domain is normalised
    assert printed["published"] is True
    [message] = drain_queue(amqp_url)
    properties = message.properties
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    assert properties.message_id == printed["event_id"]
    assert properties.type == "user_registered"
    assert properties.app_id == "producer_service"
    assert isinstance(properties.timestamp, int)
    assert properties.timestamp > 0
    assert properties.correlation_id
    assert properties.headers["schema_version"] == 1
    event = parse_user_registered(json.dumps(message.body).encode())
    assert event.event_id == printed["event_id"]
    assert event.data.user_id == printed["user_id"]
    assert (event.data.username, event.data.email, event.data.full_name) == (
        "Alice",
        "alice@example.com",
        "Alice Liddell",
    )
    [row] = outbox_rows(database_url)
    assert row.event_id == printed["event_id"]
    assert row.published_at is not None


def test_plain_output_is_the_event_id(amqp_url: str, database_url: str) -> None:
    result = run_producer(
        "register", "bob", "bob@example.com", env=producer_env(amqp_url, database_url)
    )

    assert result.returncode == 0, result.stderr
    assert message_ids(drain_queue(amqp_url)) == [result.stdout.strip()]


def test_a_duplicate_username_or_email_exits_3_and_stores_nothing(
    amqp_url: str, database_url: str
) -> None:
    env = producer_env(amqp_url, database_url)
    first = run_producer("register", "alice", "alice@example.com", env=env)
    assert first.returncode == 0, first.stderr

    same_name = run_producer("register", "ALICE", "other@example.com", env=env)
    same_email = run_producer("register", "carol", "Alice@Example.COM", env=env)

    assert same_name.returncode == 3
    assert "username 'ALICE' is already registered" in same_name.stderr
    assert same_email.returncode == 3
    assert "email 'Alice@example.com' is already registered" in same_email.stderr
    assert same_name.stdout == same_email.stdout == ""
    assert user_count(database_url) == 1
    assert len(outbox_rows(database_url)) == 1
    assert message_ids(drain_queue(amqp_url)) == [first.stdout.strip()]


@pytest.mark.parametrize(
    "arguments",
    [
        ("al", "al@example.com"),
        ("_alice", "alice@example.com"),
        ("alice smith", "alice@example.com"),
        ("a" * 33, "alice@example.com"),
        ("alice", "not-an-address"),
        ("alice", "alice@"),
        ("alice", "alice@example.com\r\nBcc: victim@example.com"),
        ("alice", "alice@example.com", "--full-name", "Alice\r\nBcc: victim@example.com"),
        ("alice", "alice@example.com", "--full-name", "x" * 201),
    ],
)
def test_invalid_input_exits_2_with_one_line_and_stores_nothing(
    amqp_url: str, database_url: str, arguments: tuple[str, ...]
) -> None:
    result = run_producer("register", *arguments, env=producer_env(amqp_url, database_url))

    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""
    assert user_count(database_url) == 0
    assert outbox_rows(database_url) == []


def test_racing_registrations_for_one_email_have_exactly_one_winner(
    amqp_url: str, database_url: str
) -> None:
    env = producer_env(amqp_url, database_url)
    # Schema in place first, so the processes race on the insert rather than on start-up.
    assert run_producer("register", "someone", "someone@example.com", env=env).returncode == 0
    addresses = ["race@example.com", "RACE@example.com", "Race@Example.com"] * 2
    racers = [
        start_producer("register", f"racer{number}", address, env=env)
        for number, address in enumerate(addresses)
    ]
    results = [(racer.wait(timeout=120), *racer.communicate()) for racer in racers]

    codes = sorted(code for code, _, _ in results)
    assert codes == [0] + [3] * (len(addresses) - 1), results
    assert all("is already registered" in err for code, _, err in results if code == 3)
    [winner_event_id] = [out.strip() for code, out, _ in results if code == 0]
    assert user_count(database_url) == 2
    assert len(outbox_rows(database_url)) == 2
    published = message_ids(drain_queue(amqp_url))
    assert len(published) == len(set(published)) == 2  # "someone" and the one winner
    assert winner_event_id in published


def test_with_the_broker_down_register_succeeds_and_the_relay_publishes_later(
    amqp_url: str, database_url: str
) -> None:
    down = producer_env(closed_port_url(), database_url)

    result = run_producer("register", "alice", "alice@example.com", "--json", env=down)

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["published"] is False
    assert "queued in the outbox" in result.stderr
    assert "guest:guest" not in result.stderr
    [row] = outbox_rows(database_url)
    assert row.published_at is None

    relay = run_producer("relay", "--once", env=producer_env(amqp_url, database_url))

    assert relay.returncode == 0, relay.stderr
    assert message_ids(drain_queue(amqp_url)) == [printed["event_id"]]
    [row] = outbox_rows(database_url)
    assert row.published_at is not None


def test_python_dash_m_runs_the_same_command(amqp_url: str, tmp_path: object) -> None:
    env = producer_env(amqp_url, f"sqlite:///{tmp_path}/p.sqlite3")
    result = subprocess.run(
        ["python", "-m", "producer_service", "register", "x", "x@example.com"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid username 'x'" in result.stderr


def test_a_bad_setting_exits_2_naming_the_variable(amqp_url: str, tmp_path: object) -> None:
    env = producer_env(amqp_url, f"sqlite:///{tmp_path}/p.sqlite3", RELAY_BATCH_SIZE="many")

    result = run_producer("relay", "--once", env=env)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "producer-service: error: configuration error: "
        "RELAY_BATCH_SIZE must be a whole number, got 'many'"
    )


def test_no_password_reaches_the_output(postgres_url: str) -> None:
    # Trust authentication ignores the password, but the service still has it in its URL.
    database_url = postgres_url.replace("postgres@", "postgres:db-pass-1234@", 1)
    assert "db-pass-1234" in database_url
    broker_url = closed_port_url().replace("guest:guest", "guest:amqp-pass-5678")
    env = producer_env(broker_url, database_url, LOG_LEVEL="DEBUG")

    register = run_producer("register", "alice", "alice@example.com", env=env)
    relay = run_producer("relay", "--once", env=env)

    assert register.returncode == 0, register.stderr
    assert relay.returncode == 1
    output = register.stdout + register.stderr + relay.stdout + relay.stderr
    assert "amqp://guest:***@127.0.0.1" in output  # the URL is shown, masked
    assert "amqp-pass-5678" not in output
    assert "db-pass-1234" not in output
