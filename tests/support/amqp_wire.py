"""AMQP 0-9-1 field tables written byte by byte, and publishing them past pika's encoder.

pika cannot encode every field type RabbitMQ accepts (floats, timestamps past year 9999, 's'
shorts, ...), so tests that need such headers on the wire write the table themselves
(`Field`, `encode_table`) and publish it as the raw properties of a message (`publish_raw`).
The type letters are RabbitMQ's (rabbit_binary_parser), not the 0-9-1 spec's.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pika
from pika import spec

from shared import topology

# Every field type RabbitMQ's parser accepts.
FIELD_TYPES = "tbBsuIilfdDSxATFV"


@dataclass(frozen=True)
class Field:
    """One typed value: `kind` is the type letter, `value` what it carries (a list of `Field`
    for 'A', a list of (key, `Field`) pairs for 'F', (scale, raw) for 'D', bytes for 'S'/'x')."""

    kind: str
    value: Any = None


_FIXED = {
    "t": ">B",
    "b": ">b",
    "B": ">B",
    "s": ">h",
    "u": ">H",
    "I": ">i",
    "i": ">I",
    "l": ">q",
    "f": ">f",
    "d": ">d",
    "T": ">Q",
}


def encode_value(field: Field) -> bytes:
    kind = field.kind.encode()
    if field.kind in _FIXED:
        return kind + struct.pack(_FIXED[field.kind], field.value)
    if field.kind == "D":
        scale, raw = field.value
        return kind + struct.pack(">BI", scale, raw)
    if field.kind in "Sx":
        data = bytes(field.value)
        return kind + struct.pack(">I", len(data)) + data
    if field.kind == "A":
        items = b"".join(encode_value(item) for item in field.value)
        return kind + struct.pack(">I", len(items)) + items
    if field.kind == "F":
        return kind + encode_table(field.value)
    if field.kind == "V":
        return kind
    raise ValueError(f"unknown field type {field.kind!r}")


def encode_table(pairs: Sequence[tuple[bytes | str, Field]]) -> bytes:
    """A field table: its 32-bit size, then each short-string key and typed value."""
    body = b""
    for key, field in pairs:
        name = key.encode() if isinstance(key, str) else key
        body += struct.pack(">B", len(name)) + name + encode_value(field)
    return struct.pack(">I", len(body)) + body


class _RawProperties(spec.BasicProperties):  # type: ignore[misc]
    """Properties whose encoding is given: pika writes these bytes as they are."""

    def __init__(self, encoded: bytes) -> None:
        super().__init__()
        self._encoded = encoded

    def encode(self) -> list[bytes]:
        return [self._encoded]


def _short(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">B", len(data)) + data


def raw_properties(table: bytes, *, message_id: str | None = None) -> bytes:
    """Basic properties as the producer sends them (CONTRACT.md), with `table` as headers."""
    flags = (
        spec.BasicProperties.FLAG_CONTENT_TYPE
        | spec.BasicProperties.FLAG_HEADERS
        | spec.BasicProperties.FLAG_DELIVERY_MODE
        | spec.BasicProperties.FLAG_CORRELATION_ID
        | spec.BasicProperties.FLAG_MESSAGE_ID
        | spec.BasicProperties.FLAG_TIMESTAMP
        | spec.BasicProperties.FLAG_TYPE
        | spec.BasicProperties.FLAG_APP_ID
    )
    return b"".join(
        (
            struct.pack(">H", flags),
            _short("application/json"),
            table,
            struct.pack(">B", 2),
            _short(str(uuid.uuid4())),
            _short(message_id or str(uuid.uuid4())),
            struct.pack(">Q", int(time.time())),
            _short("user_registered"),
            _short("producer_service"),
        )
    )


def publish_raw(
    amqp_url: str,
    body: bytes,
    table: bytes,
    *,
    message_id: str | None = None,
    exchange: str = topology.EXCHANGE,
    routing_key: str = topology.ROUTING_KEY,
) -> None:
    """Publish `body` with the header table `table` as written, confirmed by the broker."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        properties = _RawProperties(raw_properties(table, message_id=message_id))
        channel.basic_publish(exchange, routing_key, body, properties=properties, mandatory=True)
    finally:
        connection.close()
