"""Parsing never crashes: any bytes, any JSON, only ever `InvalidEvent` or a valid event."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.events import InvalidEvent, parse_user_registered, serialise, to_dict

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


def _parses_or_refuses(body: bytes) -> None:
    try:
        event = parse_user_registered(body)
    except InvalidEvent:
        return
    # Whatever was accepted must round-trip through the contract format.
    assert parse_user_registered(serialise(event)) == event


@settings(max_examples=300)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(body: bytes) -> None:
    _parses_or_refuses(body)


@settings(max_examples=300)
@given(json_values)
def test_arbitrary_json(document: Any) -> None:
    _parses_or_refuses(json.dumps(document).encode())


_valid: dict[str, Any] = {
    "event_id": "6f1c0c3e-8a8e-4d55-9a39-3f7f4b8a2c11",
    "event_type": "user_registered",
    "schema_version": 1,
    "occurred_at": "2026-11-26T06:42:45.123456+00:00",
    "data": {
        "user_id": "0b6f3c52-2f5e-4b35-8d0e-8f2b7f0b7b1a",
        "username": "alice",
        "email": "alice@example.com",
        "full_name": "Alice Liddell",
    },
}


@settings(max_examples=300)
@given(
    top=st.sampled_from(sorted(_valid)),
    field=st.sampled_from(sorted(_valid["data"])),
    value=json_values,
    in_data=st.booleans(),
)
def test_valid_events_with_one_field_replaced(
    top: str, field: str, value: Any, in_data: bool
) -> None:
    document = json.loads(json.dumps(_valid))
    if in_data:
        document["data"][field] = value
    else:
        document[top] = value
    _parses_or_refuses(json.dumps(document).encode())


def test_deeply_nested_json_is_refused_not_a_crash() -> None:
    _parses_or_refuses(b"[" * 100_000 + b"]" * 100_000)


def test_the_valid_sample_parses() -> None:
    event = parse_user_registered(json.dumps(_valid).encode())
    assert to_dict(event)["data"]["username"] == "alice"
