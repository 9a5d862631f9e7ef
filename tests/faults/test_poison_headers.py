"""Poison header tables mixed into good traffic: each costs itself, never the queue.

A timestamp past year 9999 used to end the worker's connection inside pika's frame parser
(StreamLostError) before any callback ran: 12 reconnects a minute, the delivery limit
dead-lettering prefetched good events without a reason, and `dlq list` exiting 1 at it. A
double of 1e300 (pika decodes it to an int too big to encode again) looped through requeues.
"""

from __future__ import annotations

import json
import random
import uuid

import pytest

from shared import topology
from tests.faults.harness import (
    TEST_TIMEOUT_S,
    Stack,
    account,
    good_event,
    queue_depth,
    record,
    scaled,
)
from tests.support.amqp_wire import Field, encode_table, publish_raw

pytestmark = [pytest.mark.private_node, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT_S)]

_POISON_TABLES = {
    "timestamp 2**63": [("sent", Field("T", 2**63))],
    "timestamp 2**64 - 1": [("sent", Field("T", 2**64 - 1))],
    "nested timestamp past 9999": [("trace", Field("F", [("at", Field("T", 253402300800))]))],
    "timestamp in an array": [("times", Field("A", [Field("I", 1), Field("T", 2**63)]))],
}
# Decodable, but not encodable again: harmless on a good event, fatal to a copy before.
_UNENCODABLE = encode_table([("ratio", Field("d", 1e300)), ("schema_version", Field("I", 1))])


def test_poison_headers_dead_letter_themselves_and_the_good_events_flow(stack: Stack) -> None:
    rounds = scaled(5, 25)
    good_per_round = 20
    worker = stack.start_worker()
    stack.wait_consuming(worker)

    plain = encode_table([("schema_version", Field("I", 1))])
    messages: list[tuple[str, bytes, bytes, bool]] = []  # (message_id, body, table, is_good)
    for _round in range(rounds):
        for index in range(good_per_round):
            event_id, body = good_event()
            # Every fourth good event carries the unencodable double: it must still be sent.
            messages.append((event_id, body, _UNENCODABLE if index % 4 == 0 else plain, True))
        for what, pairs in _POISON_TABLES.items():
            event_id, body = good_event()  # a good body: only the headers are poison
            messages.append((f"poison-{event_id}-{what}", body, encode_table(pairs), False))
        messages.append((f"bad-body-{uuid.uuid4().hex[:8]}", b"not json", _UNENCODABLE, False))
    random.Random(13).shuffle(messages)
    for message_id, body, table, _good in messages:
        publish_raw(stack.node.amqp_url, body, table, message_id=message_id)

    good = [message_id for message_id, _body, _table, is_good in messages if is_good]
    bad = {message_id for message_id, _body, _table, is_good in messages if not is_good}
    took = stack.wait_until_delivered(good)
    stack.wait_for(
        lambda: queue_depth(stack.node.amqp_url, topology.DEAD_LETTER_QUEUE) == len(bad),
        scaled(120, 600),
        f"{len(bad)} messages in the dead-letter queue",
    )
    stack.settle()

    listing = stack.run("email-consumer", "dlq", "list", "--json", "--limit", str(len(bad) + 10))
    assert listing.returncode == 0, listing.stderr
    dead = [json.loads(line) for line in listing.stdout.splitlines() if line.strip()]
    assert {entry["event_id"] for entry in dead} == bad  # no good event among them
    for entry in dead:
        assert entry["dead_letter_reason"] == "malformed", entry
        expected = "InvalidEvent" if entry["event_id"].startswith("bad-body") else None
        assert entry["error_type"] == (expected or "UndecodableHeaders"), entry

    result = account(good, stack.emails_by_event())
    log = worker.output()
    reconnects = log.count('"event": "broker connected"') - 1
    record(
        "poison headers mixed into good traffic",
        {
            **result.summary(),
            "poison": len(bad),
            "dead_lettered": len(dead),
            "good_dead_lettered": 0,
            "reconnects": reconnects,
            "seconds_to_deliver_good": round(took, 1),
        },
    )
    assert result.lost == []
    assert result.duplicated == 0
    assert result.unexpected == []
    assert worker.running
    assert reconnects == 0
    assert "could not settle" not in log
