"""docs/schemas/user_registered.v1.json against the code: every event the producer emits
validates, and the worker's parser accepts what the schema accepts, apart from the deliberate
differences named below."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from producer_service.registration import RegisterUser
from producer_service.validation import FULL_NAME_MAX, ValidationError
from shared.events import InvalidEvent, parse_user_registered
from shared.topology import ROUTING_KEY
from tests.contract.conftest import SCHEMA_PATH
from tests.contract.event_corpus import (
    PLAIN_TEXT,
    TEXT_FIELDS,
    UUID_FIELDS,
    near_valid_documents,
    valid_documents,
)
from tests.support.producer_fakes import FakeRegistrationStore

Validator = jsonschema.Draft202012Validator
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


@pytest.fixture(scope="module")
def validator(event_schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    Validator.check_schema(event_schema)
    return Validator(event_schema, format_checker=Validator.FORMAT_CHECKER)


def test_the_format_checker_checks_the_formats_the_schema_uses() -> None:
    # jsonschema checks `date-time` only with rfc3339-validator installed (the dev extra's
    # jsonschema[format-nongpl]); without it every timestamp would pass unchecked.
    assert {"date-time", "uuid"} <= set(Validator.FORMAT_CHECKER.checkers)


def test_the_schema_example_is_valid(
    validator: jsonschema.protocols.Validator, event_schema: dict[str, Any]
) -> None:
    for example in event_schema["examples"]:
        validator.validate(example)
        parse_user_registered(json.dumps(example).encode())


# --- the producer ---------------------------------------------------------------------------


_USERNAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{2,31}", fullmatch=True)
_EMAILS = st.emails() | st.builds(
    "{}@{}".format,
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+\-]{0,30}", fullmatch=True),
    st.sampled_from(["example.com", "bücher.example", "例え.テスト", "EXAMPLE.ORG"]),
)
_FULL_NAMES = st.none() | PLAIN_TEXT | st.text(max_size=FULL_NAME_MAX + 5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(username=_USERNAMES, email=_EMAILS, full_name=_FULL_NAMES)
def test_every_event_the_producer_emits_validates(
    validator: jsonschema.protocols.Validator,
    username: str,
    email: str,
    full_name: str | None,
) -> None:
    store = FakeRegistrationStore()
    register = RegisterUser(store, routing_key=ROUTING_KEY)
    try:
        register(username, email, full_name)
    except ValidationError:
        assume(False)  # not a valid registration: nothing is emitted
    [message] = store.messages
    document = json.loads(message.body.decode("utf-8"))
    errors = [error.message for error in validator.iter_errors(document)]
    assert errors == [], document
    parse_user_registered(message.body)


# --- the worker's parser --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Difference:
    """A document the schema and the parser judge differently, on purpose."""

    name: str
    accepted_by: Literal["parser", "schema"]
    reason: str
    applies: Callable[[Any], bool]
    example: dict[str, Any]


def _values(document: Any, paths: tuple[tuple[str, ...], ...]) -> Iterator[Any]:
    for path in paths:
        holder = document if len(path) == 1 else document.get("data")
        if isinstance(holder, dict) and path[-1] in holder:
            yield holder[path[-1]]


def _is_loose_uuid(value: Any) -> bool:
    if not isinstance(value, str) or _CANONICAL_UUID.fullmatch(value):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


_TIMESTAMP_RULE = Validator(
    json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))["properties"]["occurred_at"],
    format_checker=Validator.FORMAT_CHECKER,
)


def _is_iso_but_not_rfc3339(value: Any) -> bool:
    if not isinstance(value, str) or _TIMESTAMP_RULE.is_valid(value):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _has_lone_surrogate(value: Any) -> bool:
    return isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value)


def _example(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "event_id": "6f1c0c3e-8a8e-4d55-9a39-3f7f4b8a2c11",
        "event_type": "user_registered",
        "schema_version": 1,
        "occurred_at": "2026-11-26T06:42:45.123456+00:00",
        "data": {
            "user_id": "0b6f3c52-2f5e-4b35-8d0e-8f2b7f0b7b1a",
            "username": "alice",
            "email": "alice@example.com",
            "full_name": None,
        },
    }
    for key, value in changes.items():
        if key in document["data"]:
            document["data"][key] = value
        else:
            document[key] = value
    return document


DELIBERATE_DIFFERENCES = [
    Difference(
        name="a UUID in another spelling",
        accepted_by="parser",
        reason=(
            "the worker reads any spelling Python's uuid.UUID reads (upper case, braces, "
            "urn:uuid:, no hyphens) and uses its canonical form; the producer always writes "
            "the canonical form, which is all the schema promises another consumer"
        ),
        applies=lambda doc: any(_is_loose_uuid(v) for v in _values(doc, UUID_FIELDS)),
        example=_example(event_id="{6f1c0c3e-8a8e-4d55-9a39-3f7f4b8a2c11}"),
    ),
    Difference(
        name="an ISO 8601 timestamp outside RFC 3339",
        accepted_by="parser",
        reason=(
            "the worker reads whatever datetime.fromisoformat reads with a UTC offset (another "
            "character for the T, no seconds, a comma fraction, the basic format); the producer "
            "writes isoformat(), the RFC 3339 profile the schema promises (upper-case T and Z)"
        ),
        applies=lambda doc: any(
            _is_iso_but_not_rfc3339(v) for v in _values(doc, (("occurred_at",),))
        ),
        example=_example(occurred_at="2026-11-26 06:42:45+00:00"),
    ),
    Difference(
        name="schema_version written as 1.0",
        accepted_by="schema",
        reason=(
            "JSON Schema does not tell the number 1.0 from 1; the worker wants the integer "
            "the producer writes, and dead-letters a float as malformed"
        ),
        applies=lambda doc: isinstance(doc.get("schema_version"), float),
        example=_example(schema_version=1.0),
    ),
    Difference(
        name="a lone surrogate escape in a text field",
        accepted_by="schema",
        reason=(
            'JSON allows "\\ud800", which is half a character and no Unicode text; a schema '
            "pattern cannot refuse it portably, and the worker dead-letters it because no "
            "email can carry it"
        ),
        applies=lambda doc: any(_has_lone_surrogate(v) for v in _values(doc, TEXT_FIELDS)),
        example=_example(username="alice\ud800"),
    ),
]


def _parser_accepts(document: Any) -> bool:
    try:
        parse_user_registered(json.dumps(document).encode("utf-8"))
    except InvalidEvent:
        return False
    return True


@pytest.mark.parametrize("difference", DELIBERATE_DIFFERENCES, ids=lambda d: d.name)
def test_each_deliberate_difference_is_real(
    validator: jsonschema.protocols.Validator, difference: Difference
) -> None:
    # The list names only differences that exist: if the code or the schema changes so that
    # one is gone, remove it here.
    assert difference.applies(difference.example)
    schema_accepts = validator.is_valid(difference.example)
    assert (schema_accepts, _parser_accepts(difference.example)) == (
        difference.accepted_by == "schema",
        difference.accepted_by == "parser",
    )


@pytest.fixture(scope="module")
def draft7_validator(event_schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    # The AsyncAPI document reads the schema as an AsyncAPI Schema, a superset of draft-07.
    return jsonschema.Draft7Validator(
        event_schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )


@settings(max_examples=1500, deadline=None)
@given(document=near_valid_documents())
def test_the_parser_accepts_what_the_schema_accepts(
    validator: jsonschema.protocols.Validator,
    draft7_validator: jsonschema.protocols.Validator,
    document: Any,
) -> None:
    schema_accepts = validator.is_valid(document)
    assert draft7_validator.is_valid(document) == schema_accepts, "draft-07 reads it otherwise"
    parser_accepts = _parser_accepts(document)
    if schema_accepts == parser_accepts:
        return
    side = "schema" if schema_accepts else "parser"
    explained = [
        d.name for d in DELIBERATE_DIFFERENCES if d.accepted_by == side and d.applies(document)
    ]
    assert explained, f"only the {side} accepts {document!r}"


@settings(max_examples=300, deadline=None)
@given(document=valid_documents())
def test_valid_documents_are_accepted_by_both(
    validator: jsonschema.protocols.Validator, document: dict[str, Any]
) -> None:
    assert validator.is_valid(document)
    assert _parser_accepts(document)
