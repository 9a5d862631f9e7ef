"""The relay loop: an unroutable event stays pending and is logged, a pass the broker refuses
moves to a new connection, SIGTERM stops it cleanly."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from shared import topology
from tests.support.broker import BrokerAdmin
from tests.support.producer import (
    COMMAND,
    closed_port_url,
    drain_queue,
    json_lines,
    message_ids,
    outbox_rows,
    producer_env,
    queue_event,
    run_producer,
    set_binding,
    start_producer,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


def test_a_returned_event_stays_pending_and_is_published_once_routable(
    amqp_url: str, database_url: str
) -> None:
    env = producer_env(amqp_url, database_url, RELAY_POLL_INTERVAL_S="0.1")
    first = queue_event(database_url, "first")
    relay = start_producer("relay", env=env)
    try:
        # The relay declared the topology and published the first event: it is running.
        wait_until(lambda: _published(database_url, first), what="the first event")
        set_binding(amqp_url, bound=False)
        lost = queue_event(database_url, "lost")

        wait_until(lambda: _attempts(database_url, lost) >= 1, what="an attempt to publish")
        [row] = [row for row in outbox_rows(database_url) if row.event_id == lost]
        assert row.published_at is None
        assert "returned by the broker" in row.last_error
        assert "NO_ROUTE" in row.last_error

        set_binding(amqp_url, bound=True)
        wait_until(lambda: _published(database_url, lost), what="the event to be published")
    finally:
        relay.send_signal(signal.SIGTERM)
        _, stderr = relay.communicate(timeout=60)
    assert relay.returncode == 0, stderr
    errors = [line for line in json_lines(stderr) if line["level"] == "error"]
    assert errors
    assert {line["event_id"] for line in errors} == {lost}
    assert all("returned by the broker" in line["reason"] for line in errors)
    assert lost in message_ids(drain_queue(amqp_url))


def test_a_pass_the_broker_refuses_entirely_is_published_on_a_new_connection(
    broker_admin: BrokerAdmin, vhost: str, amqp_url: str, database_url: str
) -> None:
    """RabbitMQ 3.10 can refuse a channel's every publish after a quorum leader election
    (docs/RELIABILITY.md); a policy refuses the same way on demand."""
    env = producer_env(amqp_url, database_url, RELAY_POLL_INTERVAL_S="0.1")
    first = queue_event(database_url, "first")
    relay = start_producer("relay", env=env)
    try:
        wait_until(lambda: _published(database_url, first), what="the first event")
        with broker_admin.refusing_publishes(vhost, topology.QUEUE):
            refused = queue_event(database_url, "refused")
            wait_until(lambda: _attempts(database_url, refused) >= 2, what="two refused passes")
            [row] = [row for row in outbox_rows(database_url) if row.event_id == refused]
            assert row.published_at is None
            assert "basic.nack" in row.last_error
        wait_until(lambda: _published(database_url, refused), what="the event to be published")
    finally:
        relay.send_signal(signal.SIGTERM)
        _, stderr = relay.communicate(timeout=60)
    assert relay.returncode == 0, stderr
    lines = json_lines(stderr)
    given_up = [line for line in lines if line["event"].startswith("the broker refused every")]
    assert len(given_up) >= 2, stderr  # one per refused pass
    assert all(line["refused"] == 1 for line in given_up)
    assert message_ids(drain_queue(amqp_url)) == [first, refused]


def test_sigterm_while_the_broker_is_away_exits_0(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "relay.log"
    with log.open("w") as stderr:
        relay = subprocess.Popen(
            [COMMAND, "relay"],
            env=producer_env(closed_port_url(), database_url),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_until(
            lambda: log.read_text().count("broker unavailable; retrying") >= 2, what="retries"
        )
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=60)

    assert relay.returncode == 0, log.read_text()
    retries = [
        line
        for line in json_lines(log.read_text())
        if line["event"].startswith("broker unavailable")
    ]
    assert [line["attempt"] for line in retries[:2]] == [1, 2]
    assert "guest:guest" not in log.read_text()


def _published(database_url: str, event_id: str) -> bool:
    return any(
        row.event_id == event_id and row.published_at is not None
        for row in outbox_rows(database_url)
    )


def _attempts(database_url: str, event_id: str) -> int:
    return sum(row.attempts for row in outbox_rows(database_url) if row.event_id == event_id)


def test_the_relay_publishes_in_commit_order(amqp_url: str, database_url: str) -> None:
    queued = [queue_event(database_url, name) for name in ("first", "second", "third", "fourth")]

    result = run_producer(
        "relay", "--once", env=producer_env(amqp_url, database_url, RELAY_BATCH_SIZE="3")
    )

    assert result.returncode == 0, result.stderr
    assert "published 4 events; 0 failed" in result.stdout
    assert message_ids(drain_queue(amqp_url)) == queued
