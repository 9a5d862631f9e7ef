"""An event's retry history is the worker's own headers, the same on RabbitMQ 3.10 and 4.x.

RabbitMQ 4 no longer interprets the `x-death` header of a message a client (re)publishes: each
retry copy the worker parks arrives back with an `x-death` of its last hop only, count 1
(measured on 4.0.5: one entry, `x-first-death-queue` the last retry queue), where 3.10 kept one
entry per retry queue. So nothing may count retries from `x-death`: the worker counts in
`retry-count` and `attempts` (docs/CONTRACT.md), which this test holds to on both versions, even
for an event that arrives carrying a forged `x-death`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import topology
from shared.events import serialise
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import (
    TEST_RETRY_DELAYS,
    dead_letters,
    new_event,
    publish,
    running_worker,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

FORGED_DEATH = [{"count": 50, "reason": "expired", "queue": topology.retry_queue_name(1)}]


def test_retries_are_counted_by_the_worker_whatever_x_death_says(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    smtp_server.stop()
    event = new_event()
    with running_worker(amqp_url, smtp_server.environment(), tmp_path):
        publish(
            amqp_url,
            serialise(event),
            message_id=event.event_id,
            extra_headers={"x-death": FORGED_DEATH},
        )
        wait_until(lambda: len(dead_letters(amqp_url)) == 1, what="the dead letter")
    [dead] = dead_letters(amqp_url)
    assert dead.properties.message_id == event.event_id
    assert dead.headers["dead-letter-reason"] == "retries-exhausted"
    assert dead.headers["retry-count"] == len(TEST_RETRY_DELAYS)
    # running_worker's RETRY_ATTEMPTS=3, on the first delivery and on each delayed retry.
    assert dead.headers["attempts"] == 3 * (len(TEST_RETRY_DELAYS) + 1)
    # The broker's own record of the last hop is there on both versions; its count is not ours.
    last_hops = [entry["queue"] for entry in dead.headers["x-death"]]
    assert topology.retry_queue_name(TEST_RETRY_DELAYS[-1]) in last_hops
