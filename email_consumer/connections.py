"""What the worker and the DLQ tools share about a pika connection: its errors, closing it."""

from __future__ import annotations

from typing import Final

import pika
import pika.exceptions

from shared.amqp import BrokerUnavailable

# Connection-level failures: the worker reconnects after them instead of stopping.
CONNECTION_ERRORS: Final = (pika.exceptions.AMQPError, OSError, BrokerUnavailable)


def close_quietly(connection: pika.BlockingConnection) -> None:
    """Close `connection` if still open; a connection already broken needs no more."""
    try:
        if connection.is_open:
            connection.close()
    except CONNECTION_ERRORS:
        pass
