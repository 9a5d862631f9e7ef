"""Headers pika cannot decode, or cannot encode again, against the real worker and broker.

RabbitMQ accepts any well-formed field table; pika cannot decode some (a timestamp past year
9999 raised inside its frame parser and ended the connection, over and over) and cannot encode
others it decodes (a double of 1e300). Such a message must cost itself only: the events around
it are emailed once and never dead-lettered, and it lands in the DLQ saying why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from email_consumer import wire_properties
from shared import topology
from shared.events import serialise
from tests.support.amqp_wire import Field, encode_table, publish_raw
from tests.support.broker import ready_count
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import dead_letters, new_event, publish_event, running_worker

pytestmark = pytest.mark.broker

# This process reads the queues too (peek, dead_letters): it must survive the poison as well.
wire_properties.install()

UNDECODABLE = encode_table([("schema_version", Field("I", 1)), ("sent", Field("T", 2**63))])
UNENCODABLE = encode_table([("schema_version", Field("I", 1)), ("ratio", Field("d", 1e300))])


def test_an_undecodable_header_is_dead_lettered_and_the_events_around_it_flow(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    before = [new_event(f"before{i}") for i in range(3)]
    after = [new_event(f"after{i}") for i in range(3)]
    poison = new_event("poison")
    with running_worker(amqp_url, smtp_server.environment(), tmp_path) as worker:
        for event in before:
            publish_event(amqp_url, event)
        publish_raw(amqp_url, serialise(poison), UNDECODABLE, message_id=poison.event_id)
        for event in after:
            publish_event(amqp_url, event)
        smtp_server.wait_for(len(before) + len(after))
        wait_until(lambda: len(dead_letters(amqp_url)) == 1, what="the poison in the DLQ")
        wait_until(lambda: ready_count(amqp_url, topology.QUEUE) == 0, what="the queue to drain")
        log = worker.log()
    sent = [email.message["X-Event-ID"] for email in smtp_server.messages]
    assert sorted(sent) == sorted(e.event_id for e in before + after)  # once each
    [dead] = dead_letters(amqp_url)
    assert dead.properties.message_id == poison.event_id
    assert dead.headers["dead-letter-reason"] == "malformed"
    assert dead.headers["error-type"] == "UndecodableHeaders"
    assert "OverflowError" in dead.headers["error-message"]
    assert "sent" not in dead.headers  # fresh headers: the copy itself decodes
    # The connection survived the message: no reconnect.
    assert log.count('"broker connected"') == 1
    assert "connection lost" not in log


def test_a_header_pika_cannot_encode_again_does_not_loop_on_its_way_to_the_dlq(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """A malformed body must be dead-lettered; its copy used to fail to encode, so it was
    requeued until the delivery limit dead-lettered it with no reason."""
    good = new_event("good")
    with running_worker(amqp_url, smtp_server.environment(), tmp_path) as worker:
        publish_raw(amqp_url, b"not json", UNENCODABLE, message_id="not-json")
        publish_raw(amqp_url, serialise(good), UNENCODABLE, message_id=good.event_id)
        [email] = smtp_server.wait_for(1)
        wait_until(lambda: len(dead_letters(amqp_url)) == 1, what="the bad one in the DLQ")
        log = worker.log()
    assert email.message["X-Event-ID"] == good.event_id
    [dead] = dead_letters(amqp_url)
    assert dead.properties.message_id == "not-json"
    assert dead.headers["dead-letter-reason"] == "malformed"
    assert dead.headers["error-type"] == "InvalidEvent"
    assert dead.headers["dropped-headers"] == "ratio"
    assert dead.headers["schema_version"] == 1
    assert "could not settle" not in log
