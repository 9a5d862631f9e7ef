"""An event's retry history is the worker's own headers, the same on RabbitMQ 3.10 and 4.x.

RabbitMQ 4 no longer interprets the `x-death` header of a message a client (re)publishes: each
retry copy the worker parks arrives back with an `x-death` of its last hop only, count 1
(measured on 4.0.5: one entry, `x-first-death-queue` the last retry queue), where 3.10 kept one
entry per retry queue. So nothing may count retries from `x-death`: the worker counts in
`retry-count` and `attempts` (docs/CONTRACT.md), which this test holds to on both versions, even
for an event that arrives carrying a forged `x-death`.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pika
import pytest

from shared import topology
from shared.events import serialise
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import (
    TEST_RETRY_DELAYS,
    dead_letters,
    new_event,
    running_worker,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

FORGED_DEATH = [{"count": 50, "reason": "expired", "queue": topology.retry_queue_name(1)}]


def _publish_with_forged_death(amqp_url: str, event_id: str, body: bytes) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        topology.declare_topology(channel, retry_delays_s=TEST_RETRY_DELAYS)
        channel.confirm_delivery()
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="application/json",
            message_id=event_id,
            type="user_registered",
            app_id="producer_service",
            timestamp=int(time.time()),
            correlation_id=str(uuid.uuid4()),
            headers={"schema_version": 1, "x-death": FORGED_DEATH},
        )
        channel.basic_publish(
            topology.EXCHANGE, topology.ROUTING_KEY, body, properties=properties, mandatory=True
        )
    finally:
        connection.close()


def test_retries_are_counted_by_the_worker_whatever_x_death_says(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    smtp_server.stop()
    event = new_event()
    with running_worker(amqp_url, smtp_server.environment(), tmp_path):
        _publish_with_forged_death(amqp_url, event.event_id, serialise(event))
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
