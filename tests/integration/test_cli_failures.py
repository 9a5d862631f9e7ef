"""What the real commands print when the broker, its credentials or the database are wrong.

A failure the README calls normal (the broker is down) is one line per attempt, with no
traceback and none of pika's internals; a refused login or vhost is configuration (exit 2 at
start-up, one line naming AMQP_URL); the producer closes its connections the way the broker
calls normal.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.broker import BrokerAdmin
from tests.support.producer import (
    closed_port_url,
    json_lines,
    producer_env,
    run_producer,
    start_producer,
    user_count,
)
from tests.support.waiting import wait_until
from tests.support.worker import worker_environment

pytestmark = pytest.mark.broker


def _consumer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "email_consumer", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _consumer_env(amqp_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    smtp = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": "9"}
    return worker_environment(amqp_url, smtp, tmp_path / "consumer.sqlite3", **extra)


def _assert_no_library_noise(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    for line in stderr.splitlines():
        if line.startswith("{"):
            assert not json.loads(line)["logger"].startswith("pika"), line


def _retry_lines(stderr: str) -> list[dict[str, object]]:
    return [line for line in json_lines(stderr) if "retrying" in str(line["event"])]


# ---- the broker is down: one line per attempt -------------------------------------------------


def test_register_with_the_broker_down_prints_one_warning_and_its_message(tmp_path: Path) -> None:
    env = producer_env(closed_port_url(), f"sqlite:///{tmp_path}/p.sqlite3")

    result = run_producer("register", "alice", "alice@example.com", env=env)

    assert result.returncode == 0, result.stderr
    _assert_no_library_noise(result.stderr)
    lines = result.stderr.splitlines()
    assert [json.loads(line)["event"] for line in lines[:-1]] == [
        "user registered",
        "event not published yet",
    ]
    assert "Connection refused" in lines[-1]
    assert lines[-1].endswith("it is queued in the outbox and will be published by the relay")


def test_relay_once_with_the_broker_down_logs_one_line_per_attempt(tmp_path: Path) -> None:
    env = producer_env(closed_port_url(), f"sqlite:///{tmp_path}/p.sqlite3")

    result = run_producer("relay", "--once", env=env)

    assert result.returncode == 1
    _assert_no_library_noise(result.stderr)
    retries = _retry_lines(result.stderr)
    assert [line["attempt"] for line in retries] == [1, 2, 3, 4]
    assert all("Connection refused" in str(line["error"]) for line in retries)
    last = result.stderr.splitlines()[-1]
    assert last.startswith("producer-service: error: cannot connect to amqp://")
    assert last.endswith("(AMQP_URL): Connection refused")


@pytest.mark.parametrize("command", ["relay", "worker"])
def test_a_service_waiting_for_the_broker_logs_one_line_per_attempt(
    command: str, tmp_path: Path
) -> None:
    url = closed_port_url()
    log_path = tmp_path / "service.log"
    with _service(command, url, tmp_path, log_path) as process:
        wait_until(lambda: len(_retry_lines(log_path.read_text())) >= 3, what="three retries")
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    stderr = log_path.read_text()
    _assert_no_library_noise(stderr)
    for line in json_lines(stderr):
        assert line["event"] in {
            "relay starting",
            "broker unavailable; retrying",  # the relay's
            "broker unavailable, retrying",  # the worker's
            "old processed-event records deleted",
            "stop requested",
            "relay stopped",
            "worker stopped",
        }, line


@contextmanager
def _service(
    command: str, url: str, tmp_path: Path, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The relay or the worker in a subprocess, its stderr in `log_path`; killed if left running."""
    if command == "relay":
        env = producer_env(url, f"sqlite:///{tmp_path}/p.sqlite3")
        argv = ["producer-service", "relay"]
    else:
        env = _consumer_env(url, tmp_path)
        argv = [sys.executable, "-m", "email_consumer", "run"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ---- refused credentials or vhost -------------------------------------------------------------


@pytest.fixture
def own_user(broker_admin: BrokerAdmin, vhost: str) -> Iterator[tuple[str, str]]:
    """A broker user of this test's own, with every permission on its vhost."""
    user, password = f"cli-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    broker_admin.ctl("add_user", user, password)
    broker_admin.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    yield user, password
    broker_admin.ctl("delete_user", user, check=False)


@pytest.mark.parametrize("refusal", ["password", "vhost"])
def test_a_refused_login_or_vhost_stops_worker_and_relay_at_start_up_with_exit_2(
    refusal: str,
    broker_admin: BrokerAdmin,
    own_user: tuple[str, str],
    vhost: str,
    tmp_path: Path,
) -> None:
    user, password = own_user
    wrong_password = "wrong-" + password
    url = (
        broker_admin.url_for(vhost, user, wrong_password)
        if refusal == "password"
        else broker_admin.url_for(f"{vhost}-missing", user, password)
    )
    expected = "user name or password" if refusal == "password" else "virtual host"

    relay = run_producer("relay", env=producer_env(url, f"sqlite:///{tmp_path}/p.sqlite3"))
    worker = _consumer(_consumer_env(url, tmp_path), "run")

    for result, prog in ((relay, "producer-service"), (worker, "email-consumer")):
        assert result.returncode == 2, result.stderr
        [line] = [line for line in result.stderr.splitlines() if not line.startswith("{")]
        assert line.startswith(f"{prog}: error: cannot connect to amqp://{user}:***@127.0.0.1")
        assert "(AMQP_URL)" in line
        assert expected in line
        assert password not in result.stderr
        _assert_no_library_noise(result.stderr)


def test_register_with_refused_credentials_stores_and_says_so(
    broker_admin: BrokerAdmin, own_user: tuple[str, str], vhost: str, tmp_path: Path
) -> None:
    user, password = own_user
    database_url = f"sqlite:///{tmp_path}/p.sqlite3"
    env = producer_env(broker_admin.url_for(vhost, user, "wrong-" + password), database_url)

    result = run_producer("register", "alice", "alice@example.com", env=env)

    assert result.returncode == 0, result.stderr
    assert user_count(database_url) == 1
    last = result.stderr.splitlines()[-1]
    assert "the broker refused the user name or password (ACCESS_REFUSED)" in last
    assert "queued in the outbox" in last
    assert password not in result.stderr
    _assert_no_library_noise(result.stderr)


@pytest.mark.parametrize("command", ["relay", "worker"])
def test_a_refusal_while_running_is_retried_with_one_error_line_per_attempt(
    command: str,
    broker_admin: BrokerAdmin,
    own_user: tuple[str, str],
    vhost: str,
    tmp_path: Path,
) -> None:
    user, password = own_user
    log_path = tmp_path / "service.log"
    url = broker_admin.url_for(vhost, user, password)
    with _service(command, url, tmp_path, log_path) as process:
        started = '"consuming"' if command == "worker" else '"publisher connected"'
        wait_until(lambda: started in log_path.read_text(), what="the service's connection")
        broker_admin.ctl("change_password", user, "changed-" + password)
        broker_admin.close_connections(vhost)

        def refused() -> list[dict[str, object]]:
            return [
                line
                for line in _retry_lines(log_path.read_text())
                if "ACCESS_REFUSED" in str(line["error"])
            ]

        wait_until(lambda: len(refused()) >= 2, what="two refused attempts")
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    assert {line["level"] for line in refused()} == {"error"}
    _assert_no_library_noise(log_path.read_text())


# ---- configuration and database errors: exit 2 naming the variable ----------------------------


def test_a_sqlite_path_that_cannot_be_opened_names_the_variable_and_the_path(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    url = f"sqlite:///{folder}"  # a folder where the file should be

    producer = run_producer(
        "register", "alice", "alice@example.com", env=producer_env(closed_port_url(), url)
    )
    worker = _consumer(_consumer_env(closed_port_url(), tmp_path, CONSUMER_DATABASE_URL=url), "run")

    for result, prog, variable in (
        (producer, "producer-service", "PRODUCER_DATABASE_URL"),
        (worker, "email-consumer", "CONSUMER_DATABASE_URL"),
    ):
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines()[-1] == (
            f"{prog}: error: configuration error: {variable} (SQLite file {folder}): the database "
            "cannot be used: OperationalError: unable to open database file"
        )


def test_a_postgresql_database_that_does_not_exist_is_named_by_the_worker(
    postgres_admin_url: str, tmp_path: Path
) -> None:
    url = postgres_admin_url.rsplit("/", 1)[0] + f"/missing_{uuid.uuid4().hex[:8]}"
    env = _consumer_env(closed_port_url(), tmp_path, CONSUMER_DATABASE_URL=url)

    result = _consumer(env, "run")

    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("email-consumer: error: configuration error: CONSUMER_DATABASE_URL: ")
    assert "does not exist" in line


def test_a_metrics_port_in_use_exits_2_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _consumer_env(
            closed_port_url(), tmp_path, METRICS_PORT=str(port), METRICS_ADDRESS="127.0.0.1"
        )
        result = _consumer(env, "run")

    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert errors == [
        f"email-consumer: error: configuration error: METRICS_PORT {port} on METRICS_ADDRESS "
        "127.0.0.1 cannot be used: Address already in use"
    ]
    _assert_no_library_noise(result.stderr)


# ---- the producer closes its connections cleanly ----------------------------------------------


def _broker_log(broker_admin: BrokerAdmin) -> Path:
    status = json.loads(broker_admin.ctl("status", "--formatter", "json"))
    logs = [
        broker_admin.host_path(p)
        for p in status["log_files"]
        if p.endswith(".log") and "upgrade" not in p
    ]
    if not logs or not logs[0].is_file():
        pytest.fail(f"the test broker's log file cannot be read: {status['log_files']}")
    return logs[0]


def _closes(log: Path, vhost: str) -> tuple[int, int]:
    """(connections closed, of which 'unexpectedly') for `vhost` in the broker's log."""
    lines = log.read_text(errors="replace").splitlines()
    closing = [
        index
        for index, line in enumerate(lines)
        if "closing AMQP connection" in line and f"vhost: '{vhost}'" in line
    ]
    unexpected = sum(
        1
        for index in closing
        if index + 1 < len(lines)
        and "client unexpectedly closed TCP connection" in lines[index + 1]
    )
    return len(closing), unexpected


def _accepted(log: Path, vhost: str) -> int:
    return sum(
        1
        for line in log.read_text(errors="replace").splitlines()
        if "granted access to vhost" in line and f"'{vhost}'" in line
    )


def test_register_and_relay_close_their_connections_as_the_broker_expects(
    broker_admin: BrokerAdmin, amqp_url: str, vhost: str, tmp_path: Path
) -> None:
    log = _broker_log(broker_admin)
    env = producer_env(amqp_url, f"sqlite:///{tmp_path}/p.sqlite3")

    registered = run_producer("register", "alice", "alice@example.com", env=env)
    assert registered.returncode == 0, registered.stderr
    assert "not published" not in registered.stderr
    relay = start_producer("relay", env=env)
    run_producer("register", "bob", "bob@example.com", env=env)
    wait_until(lambda: _accepted(log, vhost) >= 6, what="the relay's connections")
    relay.send_signal(signal.SIGTERM)
    assert relay.wait(60) == 0, relay.communicate()[1]

    # Each command opens at least two connections: the topology's and the publisher's. The
    # broker logs every close, a clean one or not, once it has handled it.
    wait_until(
        lambda: _closes(log, vhost)[0] == _accepted(log, vhost) >= 6,
        what="the broker logging every close",
    )
    assert _closes(log, vhost)[1] == 0, "a connection dropped without Connection.Close"
