"""One registration, one trace: what the services really export over OTLP/HTTP (protobuf) to a
receiver this test starts, with tracing turned on by the standard OTEL_* variables only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import sqlalchemy as sa

from email_consumer.handler import CLAIM_SPAN, SEND_SPAN
from email_consumer.processing import PROCESS_SPAN
from producer_service.publisher import PUBLISH_SPAN
from producer_service.registration import REGISTRATION_SPAN
from producer_service.schema import outbox
from producer_service.storage import SqlOutboxStore
from shared import topology
from shared.database import create_database_engine
from tests.support.smtp import SmtpTestServer
from tests.support.tracing import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.waiting import wait_until
from tests.support.worker import running_worker

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PRODUCER_KIND = 4
CONSUMER_KIND = 5


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as started:
        yield started


def _producer(command: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["producer-service", *command],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _producer_env(amqp_url: str, tmp_path: Path, receiver: OtlpReceiver) -> dict[str, str]:
    return {
        **os.environ,
        **receiver.environment(),
        "AMQP_URL": amqp_url,
        "PRODUCER_DATABASE_URL": f"sqlite:///{tmp_path / 'producer.sqlite3'}",
        "LOG_FORMAT": "json",
    }


def _one(receiver: OtlpReceiver, name: str) -> ReceivedSpan:
    wait_until(lambda: bool(receiver.spans(name)), what=f"the {name!r} span")
    [span] = receiver.spans(name)
    return span


def _assert_one_trace(receiver: OtlpReceiver, event_id: str) -> None:
    """registration -> publish -> process -> (claim, send), each the parent of the next."""
    registration = _one(receiver, REGISTRATION_SPAN)
    publish = _one(receiver, PUBLISH_SPAN)
    process = _one(receiver, PROCESS_SPAN)
    claim, send = _one(receiver, CLAIM_SPAN), _one(receiver, SEND_SPAN)
    spans = [registration, publish, process, claim, send]
    assert {span.trace_id for span in spans} == {registration.trace_id}
    assert publish.parent_span_id == registration.span_id
    assert process.parent_span_id == publish.span_id
    assert claim.parent_span_id == send.parent_span_id == process.span_id
    assert (registration.service, publish.service) == ("producer_service", "producer_service")
    assert {process.service, claim.service, send.service} == {"email_consumer"}

    assert publish.kind == PRODUCER_KIND
    assert publish.attributes["messaging.system"] == "rabbitmq"
    assert publish.attributes["messaging.destination.name"] == topology.EXCHANGE
    assert publish.attributes["messaging.rabbitmq.destination.routing_key"] == (
        topology.ROUTING_KEY
    )
    assert publish.attributes["messaging.message.id"] == event_id
    assert process.kind == CONSUMER_KIND
    assert process.attributes["messaging.system"] == "rabbitmq"
    assert process.attributes["messaging.destination.name"] == topology.QUEUE
    assert process.attributes["messaging.message.id"] == event_id


def _log_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_one_register_gives_one_trace_from_the_commit_to_the_email(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    env = _producer_env(amqp_url, tmp_path, receiver)
    with running_worker(
        amqp_url, smtp_server.environment(), tmp_path, **receiver.environment()
    ) as worker:
        registered = _producer(["register", "alice", "alice@example.com", "--json"], env)
        assert registered.returncode == 0, registered.stderr
        event_id = json.loads(registered.stdout)["event_id"]
        smtp_server.wait_for(1)
        wait_until(lambda: bool(receiver.spans(SEND_SPAN)), what="the worker's spans")
        worker_log = worker.log()
    _assert_one_trace(receiver, event_id)

    trace_id = _one(receiver, REGISTRATION_SPAN).trace_id
    [registered_line] = [
        line for line in _log_lines(registered.stderr) if line["event"] == "user registered"
    ]
    assert registered_line["trace_id"] == trace_id
    [sent_line] = [line for line in _log_lines(worker_log) if line["event"] == "welcome email sent"]
    assert sent_line["trace_id"] == trace_id
    assert sent_line["span_id"] == _one(receiver, PROCESS_SPAN).span_id


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_relay_started_later_continues_the_trace_the_outbox_row_stored(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    env = _producer_env(amqp_url, tmp_path, receiver)
    # No broker at commit time: the event stays in the outbox with the registration's trace.
    unreachable = {**env, "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{_closed_port()}/"}
    registered = _producer(["register", "bob", "bob@example.com", "--json"], unreachable)
    assert registered.returncode == 0, registered.stderr
    document = json.loads(registered.stdout)
    assert document["published"] is False
    _one(receiver, REGISTRATION_SPAN)
    assert receiver.spans(PUBLISH_SPAN) == []

    with running_worker(amqp_url, smtp_server.environment(), tmp_path, **receiver.environment()):
        relayed = _producer(["relay", "--once"], env)
        assert relayed.returncode == 0, relayed.stderr
        smtp_server.wait_for(1)
        wait_until(lambda: bool(receiver.spans(SEND_SPAN)), what="the worker's spans")
    _assert_one_trace(receiver, document["event_id"])


def test_a_row_a_crashed_relay_had_claimed_is_published_by_the_next_in_the_same_trace(
    amqp_url: str, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    env = _producer_env(amqp_url, tmp_path, receiver)
    unreachable = {**env, "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{_closed_port()}/"}
    registered = _producer(["register", "carol", "carol@example.com", "--json"], unreachable)
    assert registered.returncode == 0, registered.stderr
    event_id = json.loads(registered.stdout)["event_id"]
    registration = _one(receiver, REGISTRATION_SPAN)

    # A relay claims the row and dies before publishing or releasing it; its lease runs out
    # (moved back in the table, as the passing of that much time would).
    engine = create_database_engine(env["PRODUCER_DATABASE_URL"])
    try:
        batch = SqlOutboxStore(engine, lease_s=600).claim(after_id=0, limit=10)
        assert [message.event_id for message in batch.messages] == [event_id]
        with engine.begin() as connection:
            connection.execute(outbox.update().values(claimed_until=outbox.c.claimed_until - 3600))
            claimed = connection.execute(sa.select(outbox.c.claim_token)).scalar_one()
        assert claimed is not None
    finally:
        engine.dispose()

    relayed = _producer(["relay", "--once"], env)
    assert relayed.returncode == 0, relayed.stderr
    publish = _one(receiver, PUBLISH_SPAN)
    assert publish.trace_id == registration.trace_id
    assert publish.parent_span_id == registration.span_id
    assert publish.attributes["messaging.message.id"] == event_id
