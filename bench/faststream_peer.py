"""FastStream as the asyncio peer: its RabbitMQ broker (aio-pika), publishing with confirms, and
a subscriber that sends the welcome email with aiosmtplib.

The worker process is `python -m bench.faststream_peer`, configured from BENCH_AMQP_URL,
SMTP_HOST, SMTP_PORT and BENCH_PREFETCH; the harness publishes through `open_publisher` and
`publish`. Nothing happens at import time.

FastStream's defaults are kept unless a run asks otherwise: publisher confirms on (aio-pika
waits for each one in `publish`), its log line per message at INFO, and no prefetch limit on the
subscriber's channel. aio-pika runs every delivery in a task of its own, so without a prefetch
the broker's whole queue is in flight at once: that is FastStream's default concurrency.
`BENCH_PREFETCH=N` bounds it to N, the equal-concurrency runs.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from faststream import FastStream
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

from bench.async_welcome_job import AsyncWelcomeSender

QUEUE_NAME = "welcome"


def welcome_queue() -> RabbitQueue:
    """The durable queue both sides declare (FastStream's own default is a durable=False one)."""
    return RabbitQueue(QUEUE_NAME, durable=True)


async def open_publisher(amqp_url: str) -> RabbitBroker:
    """A connected broker, with the queue declared (a publish to a missing queue is dropped)."""
    broker = RabbitBroker(amqp_url)
    await broker.connect()
    await broker.declare_queue(welcome_queue())
    return broker


async def publish(broker: RabbitBroker, document: dict[str, Any]) -> None:
    """One event, persistent and mandatory as every publisher here; returns once confirmed."""
    await broker.publish(document, queue=QUEUE_NAME, persist=True, mandatory=True)


def build_app(amqp_url: str, sender: AsyncWelcomeSender, prefetch: int | None) -> FastStream:
    """The FastStream application whose subscriber sends each event's welcome email."""
    broker = RabbitBroker(amqp_url)
    channel = Channel(prefetch_count=prefetch) if prefetch else None

    @broker.subscriber(welcome_queue(), channel=channel)
    async def send_welcome(event: dict[str, Any]) -> None:
        await sender.send(event)

    return FastStream(broker, after_shutdown=[sender.close])


def main() -> None:
    prefetch = os.environ.get("BENCH_PREFETCH", "")
    sender = AsyncWelcomeSender(os.environ["SMTP_HOST"], int(os.environ["SMTP_PORT"]))
    app = build_app(os.environ["BENCH_AMQP_URL"], sender, int(prefetch) if prefetch else None)
    # FastStream's own run loop: it stops on SIGTERM as the other measured services do.
    asyncio.run(app.run())


if __name__ == "__main__":
    main()
