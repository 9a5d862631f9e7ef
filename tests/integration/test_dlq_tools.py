"""`email-consumer dlq list | replay | purge` against the real broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pika
import pytest

from email_consumer import failure_headers, wire_properties
from email_consumer.dead_letters import DeadLetterQueue
from email_consumer.errors import SmtpRejected
from shared import topology
from shared.events import serialise
from shared.settings import BrokerSettings, Environment, broker_settings
from tests.support.amqp_wire import Field, encode_table, publish_raw
from tests.support.ports import free_port
from tests.support.worker import (
    TEST_RETRY_DELAYS,
    dead_letters,
    email_consumer_command,
    new_event,
    peek,
    publish_event,
)

pytestmark = pytest.mark.broker


def _seed(amqp_url: str, count: int) -> list[str]:
    """Dead-letter `count` events as the worker does after a 5xx; returns their ids."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ids = []
    try:
        channel = connection.channel()
        topology.declare_topology(channel, retry_delays_s=TEST_RETRY_DELAYS)
        channel.confirm_delivery()
        for index in range(count):
            event = new_event(f"user{index}")
            headers = failure_headers.after_failure(
                {"schema_version": 1},
                error=SmtpRejected(550, "5.1.1 Mailbox unavailable"),
                attempts=1,
                now=datetime.now(UTC),
                host="worker-a",
                routing_key=topology.ROUTING_KEY,
                dead_letter_reason="permanent",
            )
            properties = pika.BasicProperties(
                delivery_mode=2,
                content_type="application/json",
                message_id=event.event_id,
                correlation_id=f"corr-{index}",
                type="user_registered",
                app_id="producer_service",
                headers=headers,
            )
            channel.basic_publish(
                topology.DEAD_LETTER_EXCHANGE,
                topology.DEAD_LETTER_QUEUE,
                serialise(event),
                properties=properties,
                mandatory=True,
            )
            ids.append(event.event_id)
    finally:
        connection.close()
    return ids


def test_list_shows_error_attempts_and_time_and_removes_nothing(amqp_url: str) -> None:
    ids = _seed(amqp_url, 3)
    result = email_consumer_command(amqp_url, "dlq", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(row["event_id"] for row in rows) == sorted(ids)
    for row in rows:
        assert row["error_type"] == "SmtpRejected"
        assert row["error_message"] == "SMTP 550: 5.1.1 Mailbox unavailable"
        assert row["attempts"] == 1
        assert row["last_failure_at"]
        assert row["dead_letter_reason"] == "permanent"
    assert len(dead_letters(amqp_url)) == 3

    limited = email_consumer_command(amqp_url, "dlq", "list", "--limit", "2", "--json")
    assert len(limited.stdout.splitlines()) == 2
    table = email_consumer_command(amqp_url, "dlq", "list")
    assert table.returncode == 0
    assert all(event_id in table.stdout for event_id in ids)
    assert "SmtpRejected" in table.stdout
    assert len(dead_letters(amqp_url)) == 3


def test_list_of_an_empty_dlq_says_so(amqp_url: str) -> None:
    result = email_consumer_command(amqp_url, "dlq", "list")
    assert result.returncode == 0
    assert "empty" in result.stdout


def test_replay_moves_events_back_with_a_fresh_history_and_a_replay_count(
    amqp_url: str,
) -> None:
    _seed(amqp_url, 3)
    result = email_consumer_command(amqp_url, "dlq", "replay", "--limit", "2")
    assert result.returncode == 0, result.stderr
    assert "replayed 2 event(s)" in result.stdout
    assert len(dead_letters(amqp_url)) == 1
    replayed = peek(amqp_url, topology.QUEUE)
    assert len(replayed) == 2
    for message in replayed:
        headers = message.headers
        assert headers["replay-count"] == 1
        assert headers["schema_version"] == 1
        assert headers["original-routing-key"] == topology.ROUTING_KEY
        for cleared in ("retry-count", "attempts", "error-type", "error-message", "smtp-code"):
            assert cleared not in headers
        assert message.properties.delivery_mode == 2
        assert message.properties.content_type == "application/json"
        assert message.properties.correlation_id.startswith("corr-")
        assert json.loads(message.body)["event_id"] == message.properties.message_id

    rest = email_consumer_command(amqp_url, "dlq", "replay")
    assert "replayed 1 event(s)" in rest.stdout
    assert dead_letters(amqp_url) == []


def test_purge_needs_yes(amqp_url: str) -> None:
    _seed(amqp_url, 2)
    refused = email_consumer_command(amqp_url, "dlq", "purge")
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "--yes" in refused.stderr
    assert len(dead_letters(amqp_url)) == 2

    purged = email_consumer_command(amqp_url, "dlq", "purge", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert "purged 2 event(s)" in purged.stdout
    assert dead_letters(amqp_url) == []


def test_an_event_over_the_delivery_limit_lands_in_the_dlq_and_is_listed(amqp_url: str) -> None:
    """The broker's own dead-lettering (a worker crashing on it again and again)."""
    event = new_event()
    publish_event(amqp_url, event)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for _ in range(topology.DELIVERY_LIMIT + 1):
            method, _properties, _body = channel.basic_get(topology.QUEUE)
            assert method is not None
            channel.basic_nack(method.delivery_tag, requeue=True)
    finally:
        connection.close()
    [row] = [
        json.loads(line)
        for line in email_consumer_command(amqp_url, "dlq", "list", "--json").stdout.splitlines()
    ]
    assert row["event_id"] == event.event_id
    assert row["dead_letter_reason"] == "delivery-limit"


def test_an_unreachable_broker_is_one_clear_line_without_the_password() -> None:
    url = f"amqp://guest:s3cret-pass@127.0.0.1:{free_port()}/%2F"
    result = email_consumer_command(url, "dlq", "list")
    assert result.returncode == 1
    assert "cannot connect" in result.stderr
    assert "s3cret-pass" not in result.stderr + result.stdout


def test_a_bad_setting_exits_2_with_one_line() -> None:
    result = email_consumer_command("http://not-amqp", "dlq", "list")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "email-consumer: error: configuration error: AMQP_URL must start with amqp:// or amqps://"
    ]


POISON_ID = "evil\x1b[2J\x1b[H\x9b31m\u202eid\x07"


def _seed_control_characters(amqp_url: str) -> None:
    """A dead letter whose message id and error text hold terminal control sequences."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        topology.declare_topology(channel, retry_delays_s=TEST_RETRY_DELAYS)
        channel.confirm_delivery()
        channel.basic_publish(
            topology.DEAD_LETTER_EXCHANGE,
            topology.DEAD_LETTER_QUEUE,
            b"{}",
            properties=pika.BasicProperties(
                delivery_mode=2,
                message_id=POISON_ID,
                headers={
                    failure_headers.ERROR_TYPE: "Evil\x1b]0;owned\x07",
                    failure_headers.ERROR_MESSAGE: "line one\rline two\x1b[1A",
                    failure_headers.DEAD_LETTER_REASON: "malformed",
                },
            ),
            mandatory=True,
        )
    finally:
        connection.close()


def _controls(text: str) -> set[str]:
    return {
        char for char in text if (ord(char) < 0x20 and char != "\n") or 0x7F <= ord(char) < 0xA0
    } | ({"\u202e"} & set(text))


def test_list_shows_control_characters_escaped_in_the_table_and_in_json(amqp_url: str) -> None:
    _seed_control_characters(amqp_url)

    table = email_consumer_command(amqp_url, "dlq", "list")
    as_json = email_consumer_command(amqp_url, "dlq", "list", "--json")

    assert table.returncode == 0, table.stderr
    assert as_json.returncode == 0, as_json.stderr
    for output in (table.stdout, as_json.stdout):
        assert _controls(output) == set(), repr(output)
    assert "evil\\x1b[2J\\x1b[H\\x9b31m\\u202eid\\x07" in table.stdout
    assert "Evil\\x1b]0;owned\\x07" in table.stdout
    [row] = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert row["event_id"] == POISON_ID  # escaped on screen, the same value when decoded
    assert row["error_message"] == "line one\rline two\x1b[1A"
    assert len(dead_letters(amqp_url)) == 1


def _broker(amqp_url: str) -> BrokerSettings:
    return broker_settings(Environment({"AMQP_URL": amqp_url}))


def test_a_thousand_listings_change_neither_depth_nor_order_nor_delivery_counts(
    amqp_url: str,
) -> None:
    """Listing takes messages and hands them back: on a quorum DLQ each listing counted as a
    delivery (RabbitMQ 4 drops a message past 20) and a partial listing could reorder."""
    ids = _seed(amqp_url, 5)
    with DeadLetterQueue(_broker(amqp_url), TEST_RETRY_DELAYS) as dlq:
        for listing in range(1000):
            limit = listing % 6 or None  # partial listings of 1..5 and full ones
            listed = [summary.event_id for summary in dlq.list(limit)]
            assert listed == ids[: limit or len(ids)], f"listing {listing}"
        assert dlq.count() == len(ids)
    remaining = dead_letters(amqp_url)
    assert [message.properties.message_id for message in remaining] == ids
    for message in remaining:
        assert message.headers.get("x-delivery-count", 0) == 0, message.headers


def test_replay_of_one_replays_the_event_a_listing_of_one_just_showed(amqp_url: str) -> None:
    ids = _seed(amqp_url, 3)
    for expected in ids:
        # A full listing first: on a quorum DLQ it was what moved the head to the back.
        assert email_consumer_command(amqp_url, "dlq", "list", "--json").returncode == 0
        listed = email_consumer_command(amqp_url, "dlq", "list", "--limit", "1", "--json")
        assert listed.returncode == 0, listed.stderr
        [row] = [json.loads(line) for line in listed.stdout.splitlines()]
        assert row["event_id"] == expected
        replayed = email_consumer_command(amqp_url, "dlq", "replay", "--limit", "1")
        assert "replayed 1 event(s)" in replayed.stdout, replayed.stderr
    assert [m.properties.message_id for m in peek(amqp_url, topology.QUEUE)] == ids
    assert dead_letters(amqp_url) == []


def test_a_dlq_declared_the_old_way_is_not_listed_but_migrated_without_loss(
    amqp_url: str,
) -> None:
    """Before this version the DLQ was a quorum queue: redeclaring it fails, and listing it
    could drop its events on RabbitMQ 4. The services start anyway; `list` refuses with one
    line; `migrate` re-creates it as a classic queue with every event, in order."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.queue_declare(
            topology.DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
        )
    finally:
        connection.close()
    ids = _seed(amqp_url, 3)  # declares the rest of the topology around the old DLQ

    refused = email_consumer_command(amqp_url, "dlq", "list", "--json")
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert "dlq migrate" in line
    assert refused.stdout == ""

    migrated = email_consumer_command(amqp_url, "dlq", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "3 event(s) moved" in migrated.stdout
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        assert topology.dead_letter_queue_is_current(connection) is True
    finally:
        connection.close()
    assert [m.properties.message_id for m in dead_letters(amqp_url)] == ids
    listed = email_consumer_command(amqp_url, "dlq", "list", "--json")
    assert [json.loads(line)["event_id"] for line in listed.stdout.splitlines()] == ids
    again = email_consumer_command(amqp_url, "dlq", "migrate")
    assert "0 event(s) moved" in again.stdout


UNDECODABLE = encode_table([("sent", Field("T", 2**63)), ("schema_version", Field("I", 1))])
UNENCODABLE = encode_table([("ratio", Field("d", 1e300)), ("dead-letter-reason", Field("S", b"x"))])


def _seed_poison(amqp_url: str, table: bytes, message_id: str) -> str:
    publish_raw(
        amqp_url,
        b"{}",
        table,
        message_id=message_id,
        exchange=topology.DEAD_LETTER_EXCHANGE,
        routing_key=topology.DEAD_LETTER_QUEUE,
    )
    return message_id


def test_list_replay_and_purge_work_with_poison_anywhere_in_the_dlq(amqp_url: str) -> None:
    """Headers pika cannot decode (or encode again) at the head, in the middle and at the end:
    each used to stop `dlq list`, `dlq list --json` and `dlq replay` with exit 1 there."""
    wire_properties.install()  # this process reads the queues too
    _seed(amqp_url, 0)  # the topology
    order = [
        _seed_poison(amqp_url, UNDECODABLE, "poison-head"),
        *_seed(amqp_url, 1),
        _seed_poison(amqp_url, UNENCODABLE, "poison-middle"),
        *_seed(amqp_url, 1),
        _seed_poison(amqp_url, UNDECODABLE, "poison-tail"),
    ]
    listed = email_consumer_command(amqp_url, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [row["event_id"] for row in rows] == order
    for row in (rows[0], rows[4]):
        assert row["error_type"] == "UndecodableHeaders"
        assert "OverflowError" in row["error_message"]
    table = email_consumer_command(amqp_url, "dlq", "list")
    assert table.returncode == 0, table.stderr
    assert "poison-head" in table.stdout
    assert "poison-tail" in table.stdout

    replayed = email_consumer_command(amqp_url, "dlq", "replay")
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 5 event(s)" in replayed.stdout
    assert dead_letters(amqp_url) == []
    back = peek(amqp_url, topology.QUEUE)
    assert [message.properties.message_id for message in back] == order
    for message in back:
        assert message.headers["replay-count"] == 1  # fresh, encodable headers
    assert back[2].headers["dropped-headers"] == "ratio"

    _seed_poison(amqp_url, UNDECODABLE, "poison-again")
    _seed(amqp_url, 1)
    purged = email_consumer_command(amqp_url, "dlq", "purge", "--yes")
    assert "purged 2 event(s)" in purged.stdout, purged.stderr
    assert dead_letters(amqp_url) == []
