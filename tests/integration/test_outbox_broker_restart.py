"""The outbox across a broker outage: registrations go on, and every event is published."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.support.producer import (
    COMMAND,
    drain_queue,
    message_ids,
    outbox_rows,
    producer_env,
    run_producer,
    start_producer,
)
from tests.support.rabbit_node import RabbitNode
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.private_node, pytest.mark.postgres, pytest.mark.slow]
REGISTRATIONS = 200
# At 20 registrations/s a batch holds a few events; the cap keeps the bound below tight.
BATCH_SIZE = 10


def _published(database_url: str) -> int:
    return sum(row.published_at is not None for row in outbox_rows(database_url))


def test_a_broker_stopped_during_200_registrations_loses_nothing(
    database_url: str, tmp_path: Path
) -> None:
    with RabbitNode() as node:
        env = producer_env(
            node.amqp_url,
            database_url,
            RELAY_POLL_INTERVAL_S="0.1",
            RELAY_BATCH_SIZE=str(BATCH_SIZE),
        )
        # Schema and topology in place before anything is watched.
        assert run_producer("relay", "--once", env=env).returncode == 0
        relay_log = tmp_path / "relay.log"
        with relay_log.open("w") as log:
            relay = subprocess.Popen(
                [COMMAND, "relay"], env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        try:
            # Registrations need no broker: they keep being stored while it is away.
            simulation = start_producer(
                "simulate", "--count", str(REGISTRATIONS), "--rate", "20", env=env
            )
            wait_until(lambda: _published(database_url) >= 20, what="the first events")
            node.stop()
            stored_when_stopped = len(outbox_rows(database_url))
            wait_until(
                lambda: len(outbox_rows(database_url)) >= stored_when_stopped + 10,
                what="registrations while the broker is stopped",
            )
            assert _published(database_url) < REGISTRATIONS
            node.start()
            _, simulation_errors = simulation.communicate(timeout=120)
            assert simulation.returncode == 0, simulation_errors
            wait_until(
                lambda: _published(database_url) == REGISTRATIONS,
                timeout_s=120,
                what=f"all events published; relay log:\n{relay_log.read_text()[-3000:]}",
            )
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(timeout=60)
        assert relay.returncode == 0, relay_log.read_text()[-3000:]
        assert "broker unavailable; retrying" in relay_log.read_text()

        rows = outbox_rows(database_url)
        published = Counter(message_ids(drain_queue(node.amqp_url)))
    assert len(rows) == REGISTRATIONS
    assert set(published) == {row.event_id for row in rows}
    # A broker that stops after storing a message but before its confirm arrives leaves that
    # event pending, so it is published again: at-least-once by nature, and the worker's
    # processed-event record keeps it to one email. Only what was in flight at the stop can be
    # doubled: a batch of `simulate`'s own publisher and one of the relay's; anything more would
    # be a confirmed event published again.
    doubled = [event_id for event_id, times in published.items() if times > 1]
    assert len(doubled) <= 2 * BATCH_SIZE, doubled
    assert all(published[event_id] == 2 for event_id in doubled), published
