"""The mail server down for longer than every retry, then back, then `dlq replay`."""

from __future__ import annotations

import json
import time

import pytest

from shared import topology
from tests.faults.harness import TEST_TIMEOUT_S, Stack, account, queue_depth, record, scaled

pytestmark = [pytest.mark.private_node, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT_S)]


def test_smtp_outage_beyond_all_retries_then_replay_loses_nothing(stack: Stack) -> None:
    count = scaled(30, 300)
    stack.smtp.stop()
    assert stack.run("producer-service", "simulate", "--count", str(count)).returncode == 0
    committed = stack.committed_event_ids()
    stack.start_relay()
    worker = stack.start_worker()

    # In-process retries, then the delayed retries through the broker (1 and 2 s), then the DLQ.
    outage_started = time.monotonic()
    stack.wait_for(
        lambda: queue_depth(stack.node.amqp_url, topology.DEAD_LETTER_QUEUE) == count,
        scaled(180, 900),
        f"all {count} events in the dead-letter queue",
    )
    listing = stack.run("email-consumer", "dlq", "list", "--json", "--limit", str(len(committed)))
    assert listing.returncode == 0, listing.stderr
    dead = [json.loads(line) for line in listing.stdout.splitlines() if line.strip()]
    assert sorted(entry["event_id"] for entry in dead) == sorted(committed)
    for entry in dead:
        assert entry["dead_letter_reason"] == "retries-exhausted"
        assert entry["error_type"] == "SmtpUnavailable"
        assert entry["retry_count"] == 2  # one per RETRY_DELAYS_S

    stack.smtp.start()  # back, on the same port
    back_at = time.monotonic()
    replay = stack.run("email-consumer", "dlq", "replay")
    assert replay.returncode == 0, replay.stderr
    took = stack.wait_until_delivered(committed)
    stack.settle()

    result = account(committed, stack.emails_by_event())
    record(
        "SMTP down beyond every retry, then dlq replay",
        {
            **result.summary(),
            "seconds_until_all_dead_lettered": round(back_at - outage_started, 1),
            "seconds_from_replay_to_all_delivered": round(took, 1),
        },
    )
    assert result.lost == []
    assert result.duplicated == 0
    assert queue_depth(stack.node.amqp_url, topology.DEAD_LETTER_QUEUE) == 0
    assert worker.running
