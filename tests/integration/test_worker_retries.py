"""Transient and permanent SMTP failures: in-process retries, delayed retries, the DLQ."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pika
import pytest

from shared import topology
from shared.events import serialise
from tests.support.broker import ready_count
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import (
    TEST_RETRY_DELAYS,
    dead_letters,
    new_event,
    peek,
    publish_event,
    running_worker,
    smtp_server_requiring_login,
    worker_environment,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_a_few_4xx_replies_then_acceptance_give_exactly_one_email(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    smtp_server.fail_transiently(2)  # the worker tries 3 times in process
    event = new_event()
    with running_worker(amqp_url, smtp_server.environment(), tmp_path) as worker:
        publish_event(amqp_url, event)
        [email] = smtp_server.wait_for(1)
        wait_until(lambda: ready_count(amqp_url, topology.QUEUE) == 0, what="the queue to drain")
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
        wait_until(lambda: ready_count(amqp_url, topology.QUEUE) == 0, what="the queue to drain")
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
        wait_until(lambda: ready_count(amqp_url, topology.QUEUE) == 0, what="the queue to drain")
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


def test_a_wrong_smtp_password_parks_events_for_retry_instead_of_dead_lettering_them(
    amqp_url: str, tmp_path: Path
) -> None:
    event = new_event()
    with (
        smtp_server_requiring_login("mailer", "right-password") as server,
        running_worker(
            amqp_url,
            server.environment("mailer", "wrong-password-42"),
            tmp_path,
            RETRY_DELAYS_S="600",  # long enough for the event to wait there during the test
        ) as worker,
    ):
        publish_event(amqp_url, event)
        retry_queue = topology.retry_queue_name(600)
        wait_until(lambda: ready_count(amqp_url, retry_queue) == 1, what="the parked event")
        assert dead_letters(amqp_url) == [], "a configuration problem must not dead-letter"
        [parked] = peek(amqp_url, retry_queue)
        assert parked.properties.message_id == event.event_id
        assert parked.headers["error-type"] == "SmtpSessionRefused"
        assert parked.headers["attempts"] == 3  # retried in process first
        assert "SMTP session refused: check SMTP_HOST" in worker.log()
        assert server.messages == []
    assert "wrong-password-42" not in worker.log()
    assert "wrong-password-42" not in json.dumps(parked.headers, default=str)


def test_a_crafted_huge_counter_header_is_dead_lettered_and_the_worker_keeps_running(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    smtp_server.refuse_permanently("554 5.7.1 Rejected")  # so the event is forwarded
    crafted, good = new_event("mallory"), new_event("bob")
    with running_worker(amqp_url, smtp_server.environment(), tmp_path) as worker:
        _publish_with_headers(
            amqp_url,
            serialise(crafted),
            crafted.event_id,
            {"schema_version": 1, "attempts": 2**63 - 1, "retry-count": 2**63 - 1},
        )
        wait_until(lambda: len(dead_letters(amqp_url)) == 1, what="the dead letter")
        [dead] = dead_letters(amqp_url)
        assert dead.properties.message_id == crafted.event_id
        assert dead.headers["attempts"] == 2**31 - 1
        assert dead.headers["retry-count"] == 2**31 - 1
        assert worker.process.poll() is None, "the worker must survive the crafted header"

        smtp_server.refuse_permanently(None)
        publish_event(amqp_url, good)
        [email] = smtp_server.wait_for(1)
        assert email.message["X-Event-ID"] == good.event_id
        assert worker.process.poll() is None
    # Housekeeping ran at start-up, off the delivery path.
    assert "old processed-event records deleted" in worker.log()


def _publish_with_headers(
    amqp_url: str, body: bytes, message_id: str, headers: dict[str, object]
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            topology.EXCHANGE,
            topology.ROUTING_KEY,
            body,
            properties=pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                content_type="application/json",
                message_id=message_id,
                type="user_registered",
                app_id="producer_service",
                timestamp=int(time.time()),
                headers=headers,
            ),
            mandatory=True,
        )
    finally:
        connection.close()


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
