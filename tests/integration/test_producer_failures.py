"""`producer-service` when something goes wrong: the exit code says whether anything was stored.

Exit 2 means nothing stored; once a registration is committed, `register` exits 0 whatever
happens to the immediate publish, because the event waits in the outbox for the relay. Errors
are one line on stderr, and no log line carries the user's address or name.

The database failures are made real with SQLite triggers and a renamed table, on an SQLite file
of the test's own.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.producer import (
    COMMAND,
    closed_port_url,
    drain_queue,
    json_lines,
    outbox_rows,
    producer_env,
    read_table,
    run_producer,
    user_count,
)


@pytest.fixture(name="sqlite_url")
def sqlite_url_fixture(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/producer.sqlite3"


def _with_schema(database_url: str, *statements: str) -> None:
    """Create the schema (a registration with the broker down), then run `statements`."""
    env = producer_env(closed_port_url(), database_url)
    assert run_producer("register", "first", "first@example.com", env=env).returncode == 0
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _one_error_line(stderr: str) -> str:
    """The single line on stderr that is not a JSON log line."""
    lines = [line for line in stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, stderr
    return lines[0]


# ---- configuration errors: exit 2, nothing stored ----------------------------------------------


def test_a_bad_port_in_amqp_url_exits_2_before_anything_is_stored(
    tmp_path: Path, sqlite_url: str
) -> None:
    env = producer_env("amqp://guest:guest@localhost:abc/%2F", sqlite_url)

    first = run_producer("register", "alice", "alice@example.com", env=env)
    again = run_producer("register", "alice", "alice@example.com", env=env)

    for result in (first, again):  # the retry finds nothing stored: no conflict (exit 3)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == (
            "producer-service: error: configuration error: "
            "AMQP_URL is not a valid AMQP URL (ValueError)"
        )
        assert result.stdout == ""
    assert not (tmp_path / "producer.sqlite3").exists()


def test_an_unusable_sqlite_path_is_a_configuration_error_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    env = producer_env(closed_port_url(), f"sqlite:///{tmp_path}/a-file/sub/producer.sqlite3")

    result = run_producer("register", "alice", "alice@example.com", env=env)

    assert result.returncode == 2
    assert result.stderr.startswith(
        "producer-service: error: configuration error: PRODUCER_DATABASE_URL names a path that "
        "cannot be used: "
    )
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_malformed_postgresql_url_is_a_configuration_error_without_its_password(
    tmp_path: Path,
) -> None:
    env = producer_env(closed_port_url(), "postgresql://app:pw-secret-42@db:notaport/app")

    result = run_producer("register", "alice", "alice@example.com", env=env)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "producer-service: error: configuration error: "
        "PRODUCER_DATABASE_URL is not a valid database URL"
    )


# ---- invalid input and usage: exit 2, one line -----------------------------------------------


def test_a_full_name_that_is_not_utf8_exits_2_in_one_line_and_stores_nothing(
    sqlite_url: str,
) -> None:
    env = producer_env(closed_port_url(), sqlite_url)
    _with_schema(sqlite_url)

    # Bytes as a shell passes them for $'\xff': not UTF-8.
    result = subprocess.run(
        [COMMAND, "register", "alice", "alice@example.com", "--full-name", b"Al\xffce"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.strip() == "producer-service: error: full name is not valid UTF-8 text"
    assert user_count(sqlite_url) == 1  # "first" only


def test_a_mailbox_name_outside_ascii_exits_2_and_stores_nothing(sqlite_url: str) -> None:
    env = producer_env(closed_port_url(), sqlite_url)

    result = run_producer("register", "alice", "ålice@example.com", env=env)

    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "invalid email address 'ålice@example.com'" in line
    assert "before the @-sign are not supported" in line
    assert user_count(sqlite_url) == 0


def test_an_international_domain_is_stored_and_published_in_ascii(
    amqp_url: str, sqlite_url: str
) -> None:
    env = producer_env(amqp_url, sqlite_url)

    result = run_producer("register", "alice", "alice@exämple.com", "--json", env=env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["email"] == "alice@xn--exmple-cua.com"
    [message] = drain_queue(amqp_url)
    assert message.body["data"]["email"] == "alice@xn--exmple-cua.com"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ("register",),
            "producer-service register: error: the following arguments are required: "
            "USERNAME, EMAIL (see producer-service register --help)",
        ),
        (
            ("simulate", "--count", "0"),
            "producer-service simulate: error: argument --count: must be at least 1 "
            "(see producer-service simulate --help)",
        ),
        (
            ("frobnicate",),
            "producer-service: error: argument COMMAND: invalid choice: 'frobnicate' "
            "(choose from 'register', 'relay', 'simulate', 'health') (see producer-service --help)",
        ),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    sqlite_url: str, arguments: tuple[str, ...], expected: str
) -> None:
    result = run_producer(*arguments, env=producer_env(closed_port_url(), sqlite_url))

    assert result.returncode == 2
    assert result.stderr == expected + "\n"


# ---- after the commit: exit 0, the event waits in the outbox ----------------------------------


def test_a_failure_while_publishing_after_the_commit_exits_0_and_says_queued(
    amqp_url: str, sqlite_url: str
) -> None:
    # The broker takes the event, but marking the row published fails: not a broker outage,
    # an unexpected database refusal after the registration was committed.
    _with_schema(
        sqlite_url,
        "CREATE TRIGGER outbox_frozen BEFORE UPDATE OF published_at ON outbox "
        "BEGIN SELECT RAISE(ABORT, 'outbox is frozen'); END",
    )
    env = producer_env(amqp_url, sqlite_url)

    result = run_producer("register", "alice", "alice@example.com", "--json", env=env)

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["published"] is False
    assert f"event {printed['event_id']} was not published" in result.stderr
    assert "queued in the outbox" in result.stderr
    [logged] = [line for line in json_lines(result.stderr) if line["level"] == "error"]
    assert logged["error_type"] == "IntegrityError"
    assert "alice@example.com" not in result.stderr
    assert user_count(sqlite_url) == 2
    assert outbox_rows(sqlite_url)[-1].published_at is None  # the relay will publish it
    # A retry is a conflict now, as it should be: the first run did store the user.
    assert run_producer("register", "alice", "alice@example.com", env=env).returncode == 3


def test_an_event_a_relay_published_meanwhile_is_reported_as_published(
    amqp_url: str, sqlite_url: str
) -> None:
    # Stands in for a relay that took the write lock first and published the new event while
    # `register` waited: when `register` claims it, the row is already marked published.
    _with_schema(
        sqlite_url,
        "CREATE TRIGGER published_at_once AFTER INSERT ON outbox BEGIN "
        "UPDATE outbox SET published_at = '2026-01-01 00:00:00.000000' WHERE id = NEW.id; END",
    )
    env = producer_env(amqp_url, sqlite_url)

    result = run_producer("register", "alice", "alice@example.com", "--json", env=env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["published"] is True
    assert "not published" not in result.stderr
    assert "queued" not in result.stderr


def test_an_event_a_relay_is_publishing_is_left_to_it_and_reported_as_queued(
    amqp_url: str, sqlite_url: str
) -> None:
    # Stands in for a relay that claimed the new event first and is waiting for its confirm.
    _with_schema(
        sqlite_url,
        "CREATE TRIGGER claimed_at_once AFTER INSERT ON outbox BEGIN "
        "UPDATE outbox SET claim_token = 'a-relay', claimed_until = 4102444800 "
        "WHERE id = NEW.id; END",
    )
    env = producer_env(amqp_url, sqlite_url)

    result = run_producer("register", "alice", "alice@example.com", "--json", env=env)

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["published"] is False
    assert "queued in the outbox" in result.stderr
    assert drain_queue(amqp_url) == []  # not published a second time
    claims = read_table(sqlite_url, "SELECT claim_token FROM outbox WHERE published_at IS NULL")
    assert [claim for (claim,) in claims] == [None, "a-relay"]  # the relay's claim untouched


# ---- database errors: one line, no user data in the logs --------------------------------------


def test_a_database_error_during_registration_is_one_line_without_user_data(
    sqlite_url: str,
) -> None:
    _with_schema(sqlite_url, "ALTER TABLE outbox RENAME TO outbox_elsewhere")
    env = producer_env(closed_port_url(), sqlite_url, LOG_LEVEL="DEBUG")

    result = run_producer(
        "register", "alice", "alice@example.com", "--full-name", "Alice Liddell", env=env
    )

    assert result.returncode == 1
    assert _one_error_line(result.stderr) == (
        "producer-service: error: database error: OperationalError: no such table: outbox"
    )
    assert "Traceback" not in result.stderr
    assert "alice@example.com" not in result.stderr
    assert "Alice Liddell" not in result.stderr
    assert user_count(sqlite_url) == 1  # the transaction was rolled back
