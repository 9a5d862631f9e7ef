"""Transient and permanent SMTP failures: in-process retries, delayed retries, the DLQ."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared import topology
from tests.integration.test_worker_harness import (
    TEST_RETRY_DELAYS,
    dead_letters,
    new_event,
    peek,
    publish_event,
    running_worker,
    wait_until,
    worker_environment,
)
from tests.support.smtp import SmtpTestServer

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_a_few_4xx_replies_then_acceptance_give_exactly_one_email(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    smtp_server.fail_transiently(2)  # the worker tries 3 times in process
    event = new_event()
    with running_worker(amqp_url, smtp_server.environment(), tmp_path) as worker:
        publish_event(amqp_url, event)
        [email] = smtp_server.wait_for(1)
        wait_until(lambda: not peek(amqp_url, topology.QUEUE), what="the queue to drain")
    assert email.message["X-Event-ID"] == event.event_id
    assert worker.log().count("transient failure, retrying in process") == 2
    assert dead_letters(amqp_url) == []
    assert len(smtp_server.messages) == 1


def test_a_5xx_refusal_sends_nothing_and_dead_letters_with_the_smtp_reply(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    smtp_server.refuse_permanently("550 5.1.1 Mailbox unavailable")
    event = new_event()
    with running_worker(amqp_url, smtp_server.environment(), tmp_path):
        publish_event(amqp_url, event)
        wait_until(lambda: len(dead_letters(amqp_url)) == 1, what="the dead letter")
    [dead] = dead_letters(amqp_url)
    assert dead.properties.message_id == event.event_id
    assert dead.headers["error-type"] == "SmtpRejected"
    assert dead.headers["smtp-code"] == 550
    assert "550" in dead.headers["error-message"]
    assert "Mailbox unavailable" in dead.headers["error-message"]
    assert dead.headers["dead-letter-reason"] == "permanent"
    assert dead.headers["attempts"] == 1  # a permanent error is not retried
    assert smtp_server.messages == []


def test_an_outage_longer_than_in_process_retries_is_bridged_by_a_delayed_retry(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    smtp_server.stop()
    event = new_event()
    with running_worker(amqp_url, smtp_server.environment(), tmp_path) as worker:
        publish_event(amqp_url, event)
        wait_until(
            lambda: "event parked for a delayed retry" in worker.log(), what="a delayed retry"
        )
        smtp_server.start()
        [email] = smtp_server.wait_for(1)
        wait_until(lambda: not peek(amqp_url, topology.QUEUE), what="the queue to drain")
    assert email.message["X-Event-ID"] == event.event_id
    assert dead_letters(amqp_url) == []


def test_an_outage_longer_than_every_retry_ends_in_the_dlq_and_replay_delivers_it(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    smtp_server.stop()
    event = new_event()
    with running_worker(amqp_url, smtp_server.environment(), tmp_path):
        publish_event(amqp_url, event)
        wait_until(lambda: len(dead_letters(amqp_url)) == 1, what="the dead letter")
        [dead] = dead_letters(amqp_url)
        assert dead.headers["dead-letter-reason"] == "retries-exhausted"
        assert dead.headers["retry-count"] == len(TEST_RETRY_DELAYS)
        # 3 in-process attempts on the first delivery and on each delayed retry.
        assert dead.headers["attempts"] == 3 * (len(TEST_RETRY_DELAYS) + 1)
        assert dead.headers["error-type"] == "SmtpUnavailable"
        assert dead.headers["original-routing-key"] == topology.ROUTING_KEY
        assert dead.headers["first-failure-at"] < dead.headers["last-failure-at"]

        env = worker_environment(amqp_url, smtp_server.environment(), tmp_path / "x.sqlite3")
        listing = _cli(env, "dlq", "list", "--json")
        [row] = [json.loads(line) for line in listing.stdout.splitlines()]
        assert row["event_id"] == event.event_id
        assert row["error_type"] == "SmtpUnavailable"
        assert row["attempts"] == 9
        assert len(dead_letters(amqp_url)) == 1, "listing must not remove anything"

        smtp_server.start()
        replay = _cli(env, "dlq", "replay")
        assert "replayed 1 event" in replay.stdout
        [email] = smtp_server.wait_for(1)
        wait_until(lambda: not peek(amqp_url, topology.QUEUE), what="the queue to drain")
    assert email.message["X-Event-ID"] == event.event_id
    assert dead_letters(amqp_url) == []


def test_the_same_event_published_twice_gives_one_email(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    # A slow server keeps the first delivery in flight while the second one arrives, so both
    # run at once in the worker's pool and the claim has to decide between them.
    smtp_server.set_latency(1.0)
    event = new_event()
    publish_event(amqp_url, event)
    publish_event(amqp_url, event)
    with running_worker(amqp_url, smtp_server.environment(), tmp_path) as worker:
        smtp_server.wait_for(1)
        wait_until(
            lambda: "email already sent for this event" in worker.log(),
            what="the second copy to be recognised",
        )
        publish_event(amqp_url, event)  # and once more, long after the first was sent
        wait_until(
            lambda: worker.log().count("email already sent for this event") == 2,
            what="the third copy to be recognised",
        )
    assert [m.message["X-Event-ID"] for m in smtp_server.messages] == [event.event_id]
    assert dead_letters(amqp_url) == []


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "email_consumer", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result
