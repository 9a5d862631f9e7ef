"""A worker killed mid-delivery loses nothing: the unacknowledged event goes to the next one."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import topology
from tests.support.broker import ready_count
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import (
    WorkerProcess,
    dead_letters,
    new_event,
    publish_event,
    running_worker,
    worker_environment,
)

# The kill may land while the doomed worker holds its claim on the event; a lease this short
# (the smallest allowed: 11 x SMTP_TIMEOUT_S + SMTP_FINAL_REPLY_TIMEOUT_S) keeps the test from
# depending on where it lands.
SHORT_LEASE = {
    "SMTP_TIMEOUT_S": "1",
    "SMTP_FINAL_REPLY_TIMEOUT_S": "1",
    "WORKER_CLAIM_LEASE_S": "12",
}

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_an_event_held_by_a_killed_worker_is_delivered_once_by_the_next(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    smtp_server.stop()
    event = new_event()
    env = worker_environment(
        amqp_url,
        smtp_server.environment(),
        tmp_path / "consumer.sqlite3",
        RETRY_ATTEMPTS="50",
        RETRY_MAX_TOTAL_S="60",
        **SHORT_LEASE,
    )
    doomed = WorkerProcess(env, tmp_path / "doomed.log")
    try:
        doomed.wait_consuming()
        publish_event(amqp_url, event)
        wait_until(
            lambda: "transient failure, retrying in process" in doomed.log(),
            what="the doomed worker to be retrying",
        )
    finally:
        doomed.process.kill()  # SIGKILL: no drain, no ack, as a crash
        doomed.stop()

    smtp_server.start()
    with running_worker(amqp_url, smtp_server.environment(), tmp_path, **SHORT_LEASE):
        # A kill that lands between claim and release leaves the claim to run out its lease
        # first (the next worker parks the event as busy meanwhile), so wait past the lease.
        [email] = smtp_server.wait_for(1, timeout_s=60)
        wait_until(lambda: ready_count(amqp_url, topology.QUEUE) == 0, what="the queue to drain")
    assert email.message["X-Event-ID"] == event.event_id
    assert len(smtp_server.messages) == 1
    assert dead_letters(amqp_url) == []
