"""Two relays on one outbox publish every event exactly once: each skips the other's claims."""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from tests.support.producer import (
    drain_queue,
    json_lines,
    message_ids,
    outbox_rows,
    producer_env,
    run_producer,
    start_producer,
)

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow]
EVENTS = 5000


def test_two_relays_publish_5000_events_with_none_published_twice(
    amqp_url: str, database_url: str
) -> None:
    # Small batches and a short poll make the two relays contend for rows all the time.
    env = producer_env(amqp_url, database_url, RELAY_BATCH_SIZE="50", RELAY_POLL_INTERVAL_S="0.05")
    relays = [start_producer("relay", env=env) for _ in range(2)]
    try:
        simulation = run_producer(
            "simulate", "--count", str(EVENTS), "--relay-only", env=env, timeout_s=280
        )
    finally:
        for relay in relays:
            relay.send_signal(signal.SIGTERM)
        outputs = [relay.communicate(timeout=60) for relay in relays]

    assert simulation.returncode == 0, simulation.stderr
    assert f"published {EVENTS} of {EVENTS} events" in simulation.stdout
    assert [relay.returncode for relay in relays] == [0, 0], outputs
    rows = outbox_rows(database_url)
    assert len(rows) == EVENTS
    assert all(row.published_at is not None for row in rows)
    published = Counter(message_ids(drain_queue(amqp_url)))
    assert set(published) == {row.event_id for row in rows}
    assert [event_id for event_id, times in published.items() if times > 1] == []
    # The relays' own counts add up: no event was confirmed to both.
    shares = [
        line["published"]
        for _, stderr in outputs
        for line in json_lines(stderr)
        if line["event"] == "relay stopped"
    ]
    assert len(shares) == 2
    assert sum(shares) == EVENTS, shares
