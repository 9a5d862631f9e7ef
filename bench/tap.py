"""A tap on the event exchange: a queue of its own that receives a copy of every event.

The latency section reads `occurred_at` (stamped in the registration's transaction) from the
copies, so it needs nothing from the producer but the contract: the exchange, the routing key
and the event's JSON.
"""

from __future__ import annotations

import json
from datetime import datetime

import pika

from shared.topology import EXCHANGE, ROUTING_KEY

TAP_QUEUE = "bench.tap"


def attach_tap(amqp_url: str) -> None:
    """Declare the tap queue and bind it beside the worker's queue."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.queue_declare(TAP_QUEUE, durable=False)
        channel.queue_bind(TAP_QUEUE, EXCHANGE, routing_key=ROUTING_KEY)
    finally:
        connection.close()


def drain_occurred_at(amqp_url: str) -> dict[str, datetime]:
    """Every event id seen by the tap, with its `occurred_at`."""
    found: dict[str, datetime] = {}
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        while True:
            method, _properties, body = channel.basic_get(TAP_QUEUE, auto_ack=True)
            if method is None:
                return found
            document = json.loads(body)
            found[document["event_id"]] = datetime.fromisoformat(document["occurred_at"])
    finally:
        connection.close()
