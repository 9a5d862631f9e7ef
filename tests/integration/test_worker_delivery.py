"""The worker against the real broker and a real SMTP server: the happy path and bad input."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from shared import topology
from shared.events import serialise, to_dict
from tests.support.broker import ready_count
from tests.support.ports import free_port
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import (
    dead_letters,
    new_event,
    peek,
    publish,
    publish_event,
    running_worker,
)

pytestmark = pytest.mark.broker


def test_an_event_becomes_one_welcome_email(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    event = new_event("alice", "Alice Liddell")
    with running_worker(amqp_url, smtp_server.environment(), tmp_path):
        publish_event(amqp_url, event)
        [email] = smtp_server.wait_for(1)
        wait_until(lambda: ready_count(amqp_url, topology.QUEUE) == 0, what="the queue to drain")
    message = email.message
    assert email.envelope_to == ("alice@example.com",)
    assert message["To"] == "Alice Liddell <alice@example.com>"
    assert message["Subject"] == "Welcome, Alice Liddell!"
    assert message["X-Event-ID"] == event.event_id
    assert message["Message-ID"] == f"<{event.event_id}@example.com>"
    assert len(smtp_server.messages) == 1
    assert dead_letters(amqp_url) == []


def test_malformed_bodies_are_dead_lettered_at_once_and_do_not_block_the_next_event(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    wrong_schema = to_dict(new_event("mallory"))
    del wrong_schema["data"]["email"]
    unknown_version = {**to_dict(new_event("trent")), "schema_version": 2}
    good = new_event("bob", None)
    with running_worker(amqp_url, smtp_server.environment(), tmp_path):
        publish(amqp_url, b"\xff not json at all", message_id="not-json")
        publish(amqp_url, json.dumps(wrong_schema).encode(), message_id="wrong-schema")
        publish(amqp_url, json.dumps(unknown_version).encode(), message_id="unknown-version")
        publish_event(amqp_url, good)
        [email] = smtp_server.wait_for(1)
        wait_until(lambda: len(dead_letters(amqp_url)) == 3, what="three dead letters")
    assert email.message["X-Event-ID"] == good.event_id
    by_id = {m.properties.message_id: m.headers for m in dead_letters(amqp_url)}
    assert set(by_id) == {"not-json", "wrong-schema", "unknown-version"}
    for headers in by_id.values():
        assert headers["error-type"] in {"InvalidEvent", "UnsupportedSchemaVersion"}
        assert headers["dead-letter-reason"] == "malformed"
        assert headers["attempts"] == 1
        assert headers["original-routing-key"] == topology.ROUTING_KEY
        assert headers["worker-host"]
        assert headers["first-failure-at"] == headers["last-failure-at"]
    assert "not UTF-8" in by_id["not-json"]["error-message"]
    assert "lacks email" in by_id["wrong-schema"]["error-message"]
    assert by_id["unknown-version"]["error-type"] == "UnsupportedSchemaVersion"


def test_metrics_count_outcomes_and_latency(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    port = free_port()
    event = new_event()
    with running_worker(amqp_url, smtp_server.environment(), tmp_path, METRICS_PORT=str(port)):
        publish_event(amqp_url, event)
        publish_event(amqp_url, event)
        publish(amqp_url, b"{}", message_id="bad")
        smtp_server.wait_for(1)
        wait_until(
            lambda: "email_consumer_processing_seconds_count 3.0" in _scrape(port),
            what="all three deliveries to be settled",
        )
        metrics = _scrape(port)
    assert 'email_consumer_events_total{outcome="sent"} 1.0' in metrics
    assert 'email_consumer_events_total{outcome="duplicate"} 1.0' in metrics
    assert 'email_consumer_events_total{outcome="dead_lettered"} 1.0' in metrics
    assert 'email_consumer_events_total{outcome="delayed"} 0.0' in metrics
    assert "email_consumer_end_to_end_latency_seconds_count 1.0" in metrics


def test_log_lines_carry_ids_and_never_bodies_or_secrets(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    event = new_event("zebediah", "Zebediah Quux")
    with running_worker(amqp_url, smtp_server.environment(), tmp_path) as worker:
        publish(amqp_url, serialise(event), message_id=event.event_id, correlation_id="corr-42")
        smtp_server.wait_for(1)
        wait_until(lambda: ready_count(amqp_url, topology.QUEUE) == 0, what="the queue to drain")
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    [sent] = [line for line in lines if line["event"] == "welcome email sent"]
    assert sent["event_id"] == event.event_id
    assert sent["correlation_id"] == "corr-42"
    assert "zebediah" not in worker.log().lower()
    assert "quux" not in worker.log().lower()


def test_smtp_password_never_appears_in_logs_or_retry_headers(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    # The test server offers no AUTH: logging in fails, a configuration problem that parks the
    # event for a delayed retry, and the error must not quote secrets.
    secret = "hunter2-very-secret"
    event = new_event()
    with running_worker(
        amqp_url,
        smtp_server.environment(),
        tmp_path,
        SMTP_USERNAME="mailer",
        SMTP_PASSWORD=secret,
        LOG_LEVEL="DEBUG",
        RETRY_DELAYS_S="600",
    ) as worker:
        publish_event(amqp_url, event)
        retry_queue = topology.retry_queue_name(600)
        wait_until(lambda: ready_count(amqp_url, retry_queue) == 1, what="the parked event")
    [parked] = peek(amqp_url, retry_queue)
    assert parked.headers["error-type"] == "SmtpSessionRefused"
    assert dead_letters(amqp_url) == []
    assert secret not in worker.log()
    assert secret not in json.dumps(parked.headers, default=str)
    assert smtp_server.messages == []


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text
