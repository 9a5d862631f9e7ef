"""The ceiling: a plain pika publisher with pipelined publisher confirms.

An asynchronous `SelectConnection` keeps up to `window` messages unconfirmed at once and tops the
window up as (possibly multiple) acks arrive, so the broker is never waiting for a round trip.
Messages are persistent and mandatory, exactly as the relay publishes, to the same exchange and
queue: nothing but the outbox separates the two figures.
"""

from __future__ import annotations

import time
from typing import Any

import pika
from pika.adapters.select_connection import SelectConnection

from shared.topology import EXCHANGE, ROUTING_KEY


class _PipelinedRun:
    def __init__(
        self,
        messages: list[tuple[bytes, pika.BasicProperties]],
        window: int,
        exchange: str,
        routing_key: str,
    ) -> None:
        self.messages = messages
        self.window = window
        self.exchange = exchange
        self.routing_key = routing_key
        self.next_index = 0
        self.sent = 0
        self.confirmed = 0
        self.nacked = 0
        self.returned = 0
        self.channel: Any = None
        self.connection: Any = None
        self.started = 0.0
        self.finished = 0.0
        self.error: str | None = None

    # --- connection life cycle ----------------------------------------------------------
    def on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self.on_channel)

    def on_open_error(self, _connection: Any, error: Exception) -> None:
        self.error = f"cannot connect: {error!r}"
        self.connection.ioloop.stop()

    def on_closed(self, _connection: Any, _reason: Exception) -> None:
        self.connection.ioloop.stop()

    def on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_return_callback(self.on_return)
        channel.confirm_delivery(self.on_confirm, callback=self.on_confirm_mode)

    def on_confirm_mode(self, _frame: Any) -> None:
        self.started = time.perf_counter()
        self.fill_window()

    # --- publishing ---------------------------------------------------------------------
    def fill_window(self) -> None:
        total = len(self.messages)
        while self.sent - self.confirmed - self.nacked < self.window and self.next_index < total:
            body, properties = self.messages[self.next_index]
            self.channel.basic_publish(
                self.exchange, self.routing_key, body, properties, mandatory=True
            )
            self.next_index += 1
            self.sent += 1

    def on_confirm(self, frame: Any) -> None:
        method = frame.method
        # A multiple ack confirms every tag up to this one; delivery tags count from 1 in the
        # order of publishing, so the confirmed count is the tag itself.
        settled = method.delivery_tag if method.multiple else self.confirmed + self.nacked + 1
        newly = settled - self.confirmed - self.nacked
        if isinstance(method, pika.spec.Basic.Nack):
            self.nacked += newly
        else:
            self.confirmed += newly
        if self.confirmed + self.nacked >= len(self.messages):
            self.finished = time.perf_counter()
            self.connection.close()
        else:
            self.fill_window()

    def on_return(self, *_args: Any) -> None:
        self.returned += 1


def publish_pipelined(
    amqp_url: str,
    messages: list[tuple[bytes, pika.BasicProperties]],
    *,
    window: int = 1000,
    exchange: str = EXCHANGE,
    routing_key: str = ROUTING_KEY,
) -> float:
    """Publish every message with confirms pipelined; returns the seconds it took.

    Raises `RuntimeError` if the broker nacked or returned any message, or the connection
    failed: a ceiling that loses messages is no ceiling.
    """
    run = _PipelinedRun(messages, window, exchange, routing_key)
    run.connection = SelectConnection(
        pika.URLParameters(amqp_url),
        on_open_callback=run.on_open,
        on_open_error_callback=run.on_open_error,
        on_close_callback=run.on_closed,
    )
    run.connection.ioloop.start()
    if run.error:
        raise RuntimeError(run.error)
    if run.confirmed != len(messages) or run.returned:
        raise RuntimeError(
            f"pipelined publisher: {run.confirmed} confirmed, {run.nacked} nacked, "
            f"{run.returned} returned of {len(messages)}"
        )
    return run.finished - run.started
