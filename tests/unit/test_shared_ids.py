"""Time-ordered ids: canonical UUIDs of version 7 whose order follows their creation time."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from shared.events import new_user_registered
from shared.ids import new_id, uuid7

_CANONICAL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MOMENT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _at_ms(milliseconds: int) -> uuid.UUID:
    return uuid7(lambda: milliseconds * 1_000_000 + 999_999)


def test_an_id_is_a_canonical_version_7_uuid_of_rfc_9562() -> None:
    text = new_id()
    assert _CANONICAL.match(text)
    parsed = uuid.UUID(text)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_the_id_starts_with_its_creation_time_in_milliseconds() -> None:
    milliseconds = int(_MOMENT.timestamp() * 1000)
    assert _at_ms(milliseconds).int >> 80 == milliseconds


def test_a_later_millisecond_sorts_after_as_text_too() -> None:
    # The order an index keeps: the canonical text, as stored in the String(36) key columns.
    milliseconds = int(_MOMENT.timestamp() * 1000)
    ids = [str(_at_ms(milliseconds + step)) for step in range(0, 5000, 7)]
    assert ids == sorted(ids)


def test_ids_of_one_millisecond_still_differ() -> None:
    milliseconds = int(_MOMENT.timestamp() * 1000)
    assert len({_at_ms(milliseconds) for _ in range(10_000)}) == 10_000


def test_a_new_event_gets_a_time_ordered_id() -> None:
    event = new_user_registered(
        user_id=new_id(), username="alice", email="alice@example.com", full_name=None
    )
    assert uuid.UUID(event.event_id).version == 7
