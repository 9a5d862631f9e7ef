"""`simulate` publishes each event as soon as it commits, as `register` does; the relay only
picks up what that misses."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.support.producer import (
    closed_port_url,
    drain_queue,
    message_ids,
    outbox_rows,
    producer_env,
    run_producer,
)

pytestmark = [pytest.mark.broker]
EVENTS = 60


@pytest.mark.postgres
def test_simulate_publishes_every_event_itself_with_no_relay_running(
    amqp_url: str, database_url: str
) -> None:
    env = producer_env(amqp_url, database_url)

    result = run_producer("simulate", "--count", str(EVENTS), "--rate", "300", env=env)

    assert result.returncode == 0, result.stderr
    assert f"published {EVENTS} of {EVENTS} events" in result.stdout
    rows = outbox_rows(database_url)
    assert len(rows) == EVENTS
    assert all(row.published_at is not None and row.claim_token is None for row in rows)
    published = Counter(message_ids(drain_queue(amqp_url)))
    assert published == Counter({row.event_id: 1 for row in rows})


@pytest.mark.slow
def test_with_the_broker_down_simulate_leaves_every_event_to_the_relay_at_once(
    amqp_url: str, tmp_path: Path
) -> None:
    # SQLite only: the code path is the same on PostgreSQL, and the run ends with simulate's
    # ten seconds of waiting for a relay that is not there.
    database_url = f"sqlite:///{tmp_path}/producer.sqlite3"
    down = run_producer(
        "simulate", "--count", "20", env=producer_env(closed_port_url(), database_url)
    )

    assert down.returncode == 0, down.stderr
    assert "20 events are still pending in the outbox" in down.stderr
    rows = outbox_rows(database_url)
    # Stored unclaimed (or released): a relay need not wait for any lease to run out.
    assert [row.claim_token for row in rows] == [None] * 20
    assert all(row.published_at is None for row in rows)

    relay = run_producer("relay", "--once", env=producer_env(amqp_url, database_url))

    assert relay.returncode == 0, relay.stderr
    assert "published 20 events" in relay.stdout
    assert sorted(message_ids(drain_queue(amqp_url))) == sorted(row.event_id for row in rows)
