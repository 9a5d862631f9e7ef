"""`wire_properties`: decoding that survives any header table, copies that always encode."""

from __future__ import annotations

import struct

import pika.data
import pytest
from pika import frame, spec

from email_consumer import wire_properties
from tests.support.amqp_wire import Field, encode_table, raw_properties


def _header_frame(properties: bytes) -> bytes:
    """A content header frame on channel 1, as the broker sends it."""
    payload = struct.pack(">HHQ", spec.BasicProperties.INDEX, 0, 2) + properties
    return struct.pack(">BHI", spec.FRAME_HEADER, 1, len(payload)) + payload + b"\xce"


@pytest.fixture(autouse=True)
def _tolerant() -> None:
    wire_properties.install()


@pytest.mark.parametrize(
    ("field", "error"),
    [
        (Field("T", 2**63), "OverflowError"),
        (Field("T", 2**64 - 1), "OverflowError"),
        (Field("d", float("nan")), "ValueError"),
        (Field("d", float("inf")), "OverflowError"),
        (Field("F", [("nested", Field("T", 2**63))]), "OverflowError"),
    ],
)
def test_an_undecodable_table_leaves_the_other_properties_readable(
    field: Field, error: str
) -> None:
    table = encode_table([("schema_version", Field("I", 1)), ("poison", field)])
    _consumed, decoded = frame.decode_frame(_header_frame(raw_properties(table, message_id="m1")))
    properties = decoded.properties
    assert properties.headers is None
    assert properties.message_id == "m1"
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2
    assert properties.app_id == "producer_service"
    problem = wire_properties.undecodable(properties)
    assert problem is not None
    assert error in problem


def test_a_decodable_table_is_decoded_as_pika_does() -> None:
    table = encode_table([("schema_version", Field("I", 1)), ("name", Field("S", b"x"))])
    _consumed, decoded = frame.decode_frame(_header_frame(raw_properties(table, message_id="m2")))
    assert decoded.properties.headers == {"schema_version": 1, "name": "x"}
    assert wire_properties.undecodable(decoded.properties) is None


def test_a_truncated_table_clears_every_property_but_never_raises() -> None:
    properties = raw_properties(encode_table([("a", Field("I", 1))]))
    cut = properties[:30]
    decoded = wire_properties.TolerantBasicProperties().decode(cut)
    assert decoded.headers is None
    assert wire_properties.undecodable(decoded) is not None


def test_encodable_drops_what_pika_cannot_encode_and_names_it() -> None:
    headers = {"ratio": int(1e300), "ok": 1, "when": "2026", "bad": 1.5}
    kept = wire_properties.encodable(headers)
    assert kept == {"ok": 1, "when": "2026", "dropped-headers": "bad,ratio"}
    pika.data.encode_table([], kept)  # does not raise
    assert wire_properties.encodable({"a": 1}) == {"a": 1}
    assert wire_properties.encodable(None) == {}
