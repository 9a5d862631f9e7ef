"""The event contract: what the producer builds is what the worker parses, and nothing else."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.events import (
    MAX_BODY_BYTES,
    InvalidEvent,
    UnsupportedSchemaVersion,
    new_user_registered,
    parse_user_registered,
    serialise,
    to_dict,
)

USER_ID = "0b6f3c52-2f5e-4b35-8d0e-8f2b7f0b7b1a"


def _document(**changes: Any) -> dict[str, Any]:
    event = new_user_registered(
        user_id=USER_ID, username="alice", email="alice@example.com", full_name="Alice Liddell"
    )
    document = to_dict(event)
    document.update(changes)
    return document


def _body(document: object) -> bytes:
    return json.dumps(document).encode()


def test_round_trip_keeps_every_field() -> None:
    moment = datetime(2026, 11, 26, 6, 42, 45, 123456, tzinfo=UTC)
    event = new_user_registered(
        user_id=USER_ID,
        username="alice",
        email="alice@example.com",
        full_name=None,
        occurred_at=moment,
        event_id="6f1c0c3e-8a8e-4d55-9a39-3f7f4b8a2c11",
    )
    assert parse_user_registered(serialise(event)) == event


def test_wire_format_matches_the_contract() -> None:
    body = json.loads(
        serialise(
            _event := new_user_registered(
                user_id=USER_ID, username="bob", email="bob@example.com", full_name=None
            )
        )
    )
    assert set(body) == {"event_id", "event_type", "schema_version", "occurred_at", "data"}
    assert body["event_type"] == "user_registered"
    assert body["schema_version"] == 1
    assert body["data"] == {
        "user_id": USER_ID,
        "username": "bob",
        "email": "bob@example.com",
        "full_name": None,
    }
    assert datetime.fromisoformat(body["occurred_at"]).tzinfo is not None
    assert body["event_id"] == _event.event_id


def test_new_events_get_distinct_ids() -> None:
    ids = {
        new_user_registered(user_id=USER_ID, username="a", email="a@b.c", full_name=None).event_id
        for _ in range(50)
    }
    assert len(ids) == 50


def test_non_ascii_text_survives() -> None:
    document = _document()
    document["data"]["full_name"] = "Zoë Åsa 山田"
    assert parse_user_registered(_body(document)).data.full_name == "Zoë Åsa 山田"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[]", "not a JSON object"),
        (b"{}", "schema_version"),
        (b"x" * (MAX_BODY_BYTES + 1), "exceeds"),
    ],
)
def test_malformed_bodies_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        parse_user_registered(body)


def test_unknown_schema_version_has_its_own_error() -> None:
    with pytest.raises(UnsupportedSchemaVersion, match="unsupported schema version 2"):
        parse_user_registered(_body(_document(schema_version=2)))


def test_keys_version_1_does_not_name_are_ignored() -> None:
    document = _document()
    extended = {**document, "extra": 1, "data": {**document["data"], "locale": "fr"}}
    assert parse_user_registered(_body(extended)) == parse_user_registered(_body(document))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"schema_version": True}, "schema_version"),
        ({"schema_version": "1"}, "schema_version"),
        ({"event_type": "user_deleted"}, "event_type"),
        ({"event_id": "not-a-uuid"}, "event_id"),
        ({"occurred_at": "2026-11-26T06:42:45"}, "time zone"),
        ({"occurred_at": "yesterday"}, "ISO 8601"),
        ({"data": []}, "data"),
    ],
)
def test_wrong_top_level_fields_are_refused(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        parse_user_registered(_body(_document(**change)))


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("username", "ali\r\nBcc: x@evil.test", "control"),
        ("full_name", "Alice\u2028Bcc: x", "control"),
        ("username", 7, "not a string"),
        ("username", "", "empty"),
        ("email", "alice@example.com>\r\nBcc: evil@example.com", "control"),
        ("email", "Alice <alice@example.com>", "not an email"),
        ("email", "no-at-sign", "not an email"),
        ("user_id", "x", "UUID"),
        # json.dumps writes it as the escape \\ud800, which json.loads turns back into a lone
        # surrogate: no UTF-8 encoder (header, body, database) can take it.
        ("full_name", "Zo\ud800", "surrogate"),
        ("username", "\udfffbob", "surrogate"),
    ],
)
def test_user_fields_that_could_inject_are_refused(field: str, value: object, reason: str) -> None:
    document = _document()
    document["data"][field] = value
    with pytest.raises(InvalidEvent, match=reason):
        parse_user_registered(_body(document))


def test_missing_data_field_is_named() -> None:
    document = _document()
    del document["data"]["email"]
    with pytest.raises(InvalidEvent, match="email"):
        parse_user_registered(_body(document))


def test_integers_too_long_to_convert_are_refused_not_raised() -> None:
    # Python refuses to convert integers of more than 4300 digits with a bare ValueError.
    with pytest.raises(InvalidEvent, match="not JSON"):
        parse_user_registered(b'{"schema_version": ' + b"1" * 5000 + b"}")


def test_deep_nesting_is_refused_not_raised() -> None:
    with pytest.raises(InvalidEvent):
        parse_user_registered(b"[" * 50_000 + b"]" * 50_000)


@pytest.mark.parametrize("field", ["username", "full_name", "email"])
def test_encoded_words_that_mail_software_would_decode_are_refused(field: str) -> None:
    document = _document()
    document["data"][field] = (
        "=?utf-8?q?Bcc=3A_x=40evil?=@example.com"
        if field == "email"
        else "=?utf-8?q?Bcc=3A_x=40evil?="
    )
    with pytest.raises(InvalidEvent, match="encoded-word"):
        parse_user_registered(_body(document))
