"""Hypothesis strategies for `user_registered` documents: valid ones, and near-valid ones that
differ from a valid one by a few edits of the kind a buggy or newer producer would make."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from shared.events import new_user_registered, to_dict

JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8)
JSON_VALUES = st.recursive(
    JSON_SCALARS | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
# Text a person could type, in any script, without control characters or surrogates.
PLAIN_TEXT = st.text(
    st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=40
).filter(lambda text: "=?" not in text)

UUID_FIELDS = (("event_id",), ("data", "user_id"))
TEXT_FIELDS = (("data", "username"), ("data", "email"), ("data", "full_name"))
ALL_FIELDS = (
    *UUID_FIELDS,
    ("event_type",),
    ("schema_version",),
    ("occurred_at",),
    ("data",),
    *TEXT_FIELDS,
)


@st.composite
def valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    local = draw(st.from_regex(r"[a-z0-9][a-z0-9._+\-]{0,20}", fullmatch=True))
    offset = draw(st.integers(-23 * 60, 23 * 60))
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 10**8)))
    event = new_user_registered(
        user_id=str(draw(st.uuids())),
        username=draw(PLAIN_TEXT),
        email=f"{local}@{draw(st.sampled_from(['example.com', 'xn--bcher-kva.example']))}",
        full_name=draw(st.none() | PLAIN_TEXT),
        occurred_at=moment.astimezone(timezone(timedelta(minutes=offset))),
        event_id=str(draw(st.uuids())),
    )
    return to_dict(event)


def _uuid_variants(value: str) -> st.SearchStrategy[str]:
    try:
        plain = uuid.UUID(value).hex
    except ValueError:  # already edited into something else
        plain = value
    return st.sampled_from(
        [
            value.upper(),
            "{" + value + "}",
            "urn:uuid:" + value,
            plain,
            value + "\n",
            value[:-1],
            value[:-1] + "g",
            value.replace("-", "", 1) + "0",
            "",
        ]
    )


TIMESTAMP_VARIANTS = st.sampled_from(
    [
        "2026-11-26T06:42:45.123456+00:00",
        "2026-11-26T06:42:45Z",
        "2026-11-26T06:42:45-00:00",
        "2026-11-26T06:42:45.1+05:30",
        "2026-11-26T06:42:45.1234567+00:00",
        "2026-11-26T06:42:45",
        "2026-11-26",
        "2026-11-26T06:42:45z",
        "2026-11-26t06:42:45Z",
        "2026-11-26 06:42:45+00:00",
        "20261126T064245+0000",
        "2026-11-26T06:42+00:00",
        "2026-11-26T06:42:45,5+00:00",
        "2026-11-26T06:42:45+00:00:30",
        "2026-11-26T23:59:60Z",
        "2026-02-30T06:42:45Z",
        "2026-11-26T24:00:00Z",
        "2026-11-26T06:42:45+24:00",
        "2026-11-26T06:42:45+00:00\n",
        "2026-11-26T06:42:45.+00:00",
        "yesterday",
        "",
    ]
)


def _text_variants(value: object) -> st.SearchStrategy[Any]:
    base = value if isinstance(value, str) and value else "x"
    return st.sampled_from(
        [
            "",
            "a" * 320,
            "a" * 321,
            base + "\n",
            base + "\r\nBcc: x@evil.example",
            base + "\x7f",
            base + "\x85",
            base + "\u2028",
            base + "=?utf-8?q?x?=",
            base + "\ud800",
            "Zoë 佐藤 🐇",
            " ",
        ]
    ) | st.text(max_size=12)


EMAIL_VARIANTS = st.sampled_from(
    [
        "alice@example.com",
        "alice",
        "@example.com",
        "alice@",
        "a@b@c",
        "al ice@example.com",
        "<alice@example.com>",
        "alice@example.com, bob@example.com",
        "zoë@example.com",
        "alice@[127.0.0.1]",
        "a\\b@example.com",
        "a;b@example.com",
        "@",
    ]
)


def _replacement(path: tuple[str, ...], current: Any) -> st.SearchStrategy[Any]:
    other_type = JSON_VALUES
    if path in UUID_FIELDS and isinstance(current, str):
        return _uuid_variants(current) | other_type
    if path == ("occurred_at",):
        return TIMESTAMP_VARIANTS | other_type
    if path == ("schema_version",):
        return st.sampled_from([1, 1.0, 2, 0, -1, "1", True, None, 10**20]) | other_type
    if path == ("event_type",):
        return st.sampled_from(["user_registered", "User_Registered", "user_deleted", ""])
    if path == ("data", "email"):
        return EMAIL_VARIANTS | _text_variants(current) | other_type
    if path in TEXT_FIELDS:
        return _text_variants(current) | other_type
    return other_type


@st.composite
def near_valid_documents(draw: st.DrawFn) -> Any:
    """A valid document with up to three edits: a field removed, replaced or added."""
    if draw(st.integers(0, 30)) == 0:
        return draw(JSON_VALUES)  # not even an object, now and then
    document = draw(valid_documents())
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3]))):
        kind = draw(st.sampled_from(["replace", "replace", "replace", "remove", "add"]))
        data = document.get("data")
        if kind == "add":
            target = draw(st.sampled_from(["top", "data"]))
            holder = data if target == "data" and isinstance(data, dict) else document
            holder[draw(st.text(min_size=1, max_size=10))] = draw(JSON_VALUES)
            continue
        path = draw(st.sampled_from(ALL_FIELDS))
        edited: Any = document if len(path) == 1 else data
        if not isinstance(edited, dict) or path[-1] not in edited:
            continue
        if kind == "remove":
            del edited[path[-1]]
        else:
            edited[path[-1]] = draw(_replacement(path, edited[path[-1]]))
    return document
