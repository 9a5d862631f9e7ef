"""A flood of malformed messages mixed into good traffic: the worker shrugs it off."""

from __future__ import annotations

import json
import random
import uuid

import pika
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

pytestmark = [pytest.mark.private_node, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT_S)]


def _valid_document() -> dict[str, object]:
    _event_id, body = good_event()
    document: dict[str, object] = json.loads(body)
    return document


def _bad_bodies() -> list[tuple[str, bytes]]:
    """(what is wrong, body): one of each kind an attacker or a broken producer could send."""
    wrong_types = _valid_document()
    wrong_types["data"] = {"user_id": 1, "username": [], "email": None, "full_name": 3}
    unknown_version = _valid_document()
    unknown_version["schema_version"] = 2
    bad_email = _valid_document()
    bad_email["data"] = {**bad_email["data"], "email": "a@b>\r\nBcc: x@evil"}  # type: ignore[dict-item]
    return [
        ("not JSON", b"this is not json"),
        ("empty body", b""),
        ("invalid UTF-8", b"\xff\xfe\xfd"),
        ("JSON array", b"[1, 2, 3]"),
        ("JSON null", b"null"),
        ("deeply nested", b"[" * 100_000 + b"]" * 100_000),
        ("huge body", b'{"event_id": "' + b"x" * 2_000_000 + b'"}'),
        ("wrong types", json.dumps(wrong_types).encode()),
        ("unknown schema_version", json.dumps(unknown_version).encode()),
        ("header injection in email", json.dumps(bad_email).encode()),
    ]


def test_malformed_flood_dead_letters_the_bad_and_delivers_the_good(stack: Stack) -> None:
    rounds = scaled(5, 50)
    good_per_round = 20
    worker = stack.start_worker()
    stack.wait_consuming(worker)

    messages: list[tuple[str, str | None, bytes]] = []  # (message_id, good event_id, body)
    for _round in range(rounds):
        for _ in range(good_per_round):
            event_id, body = good_event()
            messages.append((event_id, event_id, body))
        for what, body in _bad_bodies():
            messages.append((f"bad-{uuid.uuid4().hex[:8]}-{what}", None, body))
    random.Random(7).shuffle(messages)

    connection = pika.BlockingConnection(pika.URLParameters(stack.node.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for message_id, _good, body in messages:
            channel.basic_publish(
                topology.EXCHANGE,
                topology.ROUTING_KEY,
                body,
                pika.BasicProperties(
                    delivery_mode=pika.DeliveryMode.Persistent,
                    content_type="application/json",
                    message_id=message_id,
                ),
                mandatory=True,
            )
    finally:
        connection.close()

    good = [good_id for _id, good_id, _body in messages if good_id is not None]
    bad = {message_id for message_id, good_id, _body in messages if good_id is None}
    took = stack.wait_until_delivered(good)
    stack.wait_for(
        lambda: queue_depth(stack.node.amqp_url, topology.DEAD_LETTER_QUEUE) == len(bad),
        scaled(120, 900),
        f"{len(bad)} messages in the dead-letter queue",
    )
    stack.settle()

    listing = stack.run("email-consumer", "dlq", "list", "--json", "--limit", str(len(bad)))
    assert listing.returncode == 0, listing.stderr
    dead = [json.loads(line) for line in listing.stdout.splitlines() if line.strip()]
    assert {entry["event_id"] for entry in dead} == bad
    for entry in dead:
        # Each says why, at once: no retries for what can never succeed.
        assert entry["dead_letter_reason"] in {"malformed", "permanent"}, entry
        assert entry["error_type"], entry
        assert entry["error_message"], entry
        assert entry["retry_count"] in (None, 0), entry

    result = account(good, stack.emails_by_event())
    record(
        "malformed flood mixed into good traffic",
        {
            **result.summary(),
            "malformed": len(bad),
            "dead_lettered": len(dead),
            "seconds_to_deliver_good": round(took, 1),
        },
    )
    assert result.lost == []
    assert result.duplicated == 0
    assert result.unexpected == []
    # The worker never crashed nor reconnected: one process, one broker connection.
    assert worker.running
    assert worker.output().count('"event": "broker connected"') == 1
