"""What the worker and the DLQ tools share about a pika connection: its errors, closing it."""

from __future__ import annotations

from typing import Any, Final

import pika
import pika.exceptions

from email_consumer import wire_properties
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


def copy_with_headers(properties: pika.BasicProperties, headers: dict[str, Any]) -> Any:
    """The original's properties with new headers; persistent whatever it was before.

    Retry and dead-letter copies and replays keep the event's identity (message_id,
    correlation_id, type, timestamp) so the worker and the logs recognise the same event.
    Headers pika cannot encode are left out (`wire_properties.encodable`), so the copy always
    goes out.
    """
    return pika.BasicProperties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=wire_properties.encodable(headers),
        delivery_mode=pika.DeliveryMode.Persistent,
        correlation_id=properties.correlation_id,
        message_id=properties.message_id,
        timestamp=properties.timestamp,
        type=properties.type,
        app_id=properties.app_id,
    )
