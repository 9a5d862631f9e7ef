"""Message properties off and onto the wire, whatever a publisher put in the headers.

pika decodes properties in its frame parser, before any callback of ours, and an exception there
ends the connection; the broker then redelivers the message (and those prefetched with it) to
the next one, until the delivery limit. A header table RabbitMQ accepts can make it raise (a
timestamp past year 9999, a NaN or infinite double, a truncated table). `install` makes the
parser tolerant: the other properties are still read, `headers` is None, `undecodable` says
why, and the raw table is dropped so that no copy carries it on. The other way round, pika
cannot encode every value it decodes (a double of 1e300): `encodable` keeps only what it can
write, so a copy to a retry queue or the DLQ, or a replay, always goes out.

`email-consumer` calls `install` once at start-up, before it opens a connection.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

import pika.data
from pika import spec

# Names the headers dropped from a copy because pika could not encode them.
DROPPED_HEADERS: Final = "dropped-headers"
_PROBLEM_BUDGET: Final = 200


class UndecodableHeaders(Exception):
    """A message's header table could not be decoded; why is in the message."""


class TolerantBasicProperties(spec.BasicProperties):  # type: ignore[misc]
    """`BasicProperties` whose decoding never raises because of the headers table."""

    # Why the headers table could not be decoded; None when it could.
    undecodable: str | None = None

    def decode(self, encoded: bytes, offset: int = 0) -> TolerantBasicProperties:
        try:
            super().decode(encoded, offset)
        except Exception as error:  # noqa: BLE001 - any failure here would end the connection
            self._decode_without_headers(encoded, offset, error)
        return self

    def _decode_without_headers(self, encoded: bytes, offset: int, error: Exception) -> None:
        problem = f"{type(error).__name__}: {error}"
        try:
            super().decode(_without_headers(encoded, offset), 0)
        except Exception as second:  # noqa: BLE001 - not even the other properties read back
            for name in spec.BasicProperties().__dict__:
                setattr(self, name, None)
            problem = f"{problem}; other properties unreadable ({type(second).__name__})"
        self.headers = None
        self.undecodable = f"the header table cannot be decoded ({problem})"[:_PROBLEM_BUDGET]


def install() -> None:
    """Make pika decode every basic property set with `TolerantBasicProperties` (idempotent).

    pika's frame parser looks its properties class up in `pika.spec.props` for every content
    header frame, so replacing that entry covers every connection of this process.
    """
    spec.props[spec.BasicProperties.INDEX] = TolerantBasicProperties


def undecodable(properties: Any) -> str | None:
    """Why `properties`' header table could not be decoded, or None when it was."""
    problem = getattr(properties, "undecodable", None)
    return problem if isinstance(problem, str) else None


def encodable(headers: Mapping[Any, Any] | None) -> dict[Any, Any]:
    """`headers` without the entries pika cannot encode; their names go in `dropped-headers`."""
    if _encodes(headers or {}):
        return dict(headers or {})  # the usual case: every entry encodes, one pass
    kept: dict[Any, Any] = {}
    dropped: list[str] = []
    for name, value in (headers or {}).items():
        if _encodes({name: value}):
            kept[name] = value
        else:
            dropped.append(name if isinstance(name, str) else repr(name))
    if dropped:
        kept[DROPPED_HEADERS] = ",".join(sorted(dropped))[:_PROBLEM_BUDGET]
    return kept


def _without_headers(encoded: bytes, offset: int) -> bytes:
    """The encoded properties with the headers table cut out and its flag cleared.

    The layout (AMQP 0-9-1 §4.2.6.1): 16-bit flag words, then content-type and
    content-encoding (short strings, when flagged), then the headers table (a 32-bit size and
    that many bytes). Basic has 14 properties, so one flag word holds them all.
    """
    (flags,) = struct.unpack_from(">H", encoded, offset)
    position = offset + 2
    for flag in (
        spec.BasicProperties.FLAG_CONTENT_TYPE,
        spec.BasicProperties.FLAG_CONTENT_ENCODING,
    ):
        if flags & flag:
            position += 1 + encoded[position]
    if not flags & spec.BasicProperties.FLAG_HEADERS:
        raise ValueError("no header table to cut out")
    (size,) = struct.unpack_from(">I", encoded, position)
    rest = encoded[position + 4 + size :]
    kept_flags = flags & ~spec.BasicProperties.FLAG_HEADERS
    return struct.pack(">H", kept_flags) + encoded[offset + 2 : position] + rest


def _encodes(table: Mapping[Any, Any]) -> bool:
    try:
        pika.data.encode_table([], dict(table))
    except Exception:  # noqa: BLE001 - pika raises struct.error, OverflowError, its own, ...
        return False
    return True
