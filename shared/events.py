"""The `user_registered` event: building it, serialising it and parsing it strictly.

The wire format is the contract between the services (docs/CONTRACT.md, and its JSON Schema
docs/schemas/user_registered.v1.json). Parsing checks every field of that shape, so a malformed
message is recognised at once and dead-lettered instead of failing somewhere deep inside the
worker; keys the shape does not name are ignored, so that version 1 can grow.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from shared.errors import PermanentError
from shared.ids import new_id

EVENT_TYPE: Final = "user_registered"
SCHEMA_VERSION: Final = 1
# Far above any real event (a few hundred bytes); refusing early keeps a flood of huge bodies
# from costing the worker memory and time.
MAX_BODY_BYTES: Final = 64 * 1024
MAX_FIELD_CHARS: Final = 320

_TOP_LEVEL_KEYS: Final = frozenset(
    {"event_id", "event_type", "schema_version", "occurred_at", "data"}
)
_DATA_KEYS: Final = frozenset({"user_id", "username", "email", "full_name"})
# How the contract evolves (docs/CONTRACT.md, "Evolution"): a field added to version 1 is
# ignored, so producers can add one without waiting for every consumer; a change that removes
# or redefines a field is a new `schema_version`, which this code dead-letters at once rather
# than guess at (a replay after an upgrade delivers it).
UNSUPPORTED_SCHEMA_VERSION: Final = "unsupported schema version"


class InvalidEvent(PermanentError):
    """The message body is not a well-formed `user_registered` event."""


class UnsupportedSchemaVersion(InvalidEvent):
    """The event is well-formed JSON but of a schema version this code does not know."""


@dataclass(frozen=True, slots=True)
class RegisteredUser:
    user_id: str
    username: str
    email: str
    full_name: str | None


@dataclass(frozen=True, slots=True)
class UserRegistered:
    event_id: str
    occurred_at: datetime
    data: RegisteredUser

    event_type = EVENT_TYPE
    schema_version = SCHEMA_VERSION


def new_user_registered(
    *,
    user_id: str,
    username: str,
    email: str,
    full_name: str | None,
    occurred_at: datetime | None = None,
    event_id: str | None = None,
) -> UserRegistered:
    """Build a new event with a fresh id, stamped now (UTC) unless told otherwise.

    The id is time-ordered (shared/ids.py): the outbox and the worker's records index it.
    """
    return UserRegistered(
        event_id=event_id or new_id(),
        occurred_at=occurred_at or datetime.now(UTC),
        data=RegisteredUser(user_id=user_id, username=username, email=email, full_name=full_name),
    )


def to_dict(event: UserRegistered) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "event_type": EVENT_TYPE,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": event.occurred_at.isoformat(),
        "data": {
            "user_id": event.data.user_id,
            "username": event.data.username,
            "email": event.data.email,
            "full_name": event.data.full_name,
        },
    }


def serialise(event: UserRegistered) -> bytes:
    """The UTF-8 JSON body published on the broker."""
    return json.dumps(to_dict(event), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_user_registered(body: bytes) -> UserRegistered:
    """Parse a message body, raising `InvalidEvent` for anything but a valid event.

    Never raises anything else, whatever the input: the worker relies on that to dead-letter
    malformed messages instead of crashing.
    """
    if len(body) > MAX_BODY_BYTES:
        raise InvalidEvent(f"body of {len(body)} bytes exceeds the {MAX_BODY_BYTES}-byte limit")
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise InvalidEvent(f"body is not UTF-8: {error.reason}") from None
    except (ValueError, RecursionError) as error:
        # ValueError covers JSONDecodeError and also the interpreter's limit on the digits of
        # an integer, which a hostile body of well under MAX_BODY_BYTES can exceed.
        raise InvalidEvent(f"body is not JSON: {_short_repr(str(error))}") from None
    return _event_from_document(document)


def _event_from_document(document: object) -> UserRegistered:
    if not isinstance(document, dict):
        raise InvalidEvent("event is not a JSON object")
    version = document.get("schema_version")
    if type(version) is not int:
        raise InvalidEvent("schema_version is missing or not an integer")
    if version != SCHEMA_VERSION:
        raise UnsupportedSchemaVersion(
            f"{UNSUPPORTED_SCHEMA_VERSION} {version}; this worker reads version {SCHEMA_VERSION}"
        )
    _require_keys(document, _TOP_LEVEL_KEYS, "event")
    if document["event_type"] != EVENT_TYPE:
        raise InvalidEvent("event_type is not 'user_registered'")
    data = document["data"]
    if not isinstance(data, dict):
        raise InvalidEvent("data is not a JSON object")
    _require_keys(data, _DATA_KEYS, "data")
    full_name = data["full_name"]
    if full_name is not None:
        full_name = _clean_text(full_name, "data.full_name")
    return UserRegistered(
        event_id=_uuid_text(document["event_id"], "event_id"),
        occurred_at=_aware_timestamp(document["occurred_at"]),
        data=RegisteredUser(
            user_id=_uuid_text(data["user_id"], "data.user_id"),
            username=_clean_text(data["username"], "data.username"),
            email=_email_text(data["email"]),
            full_name=full_name,
        ),
    )


def _require_keys(mapping: dict[str, Any], expected: frozenset[str], where: str) -> None:
    """Every field of version 1 must be there; any other key is ignored (never read)."""
    missing = sorted(expected - set(mapping))
    if missing:
        raise InvalidEvent(f"{where} lacks {', '.join(missing)}")


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _clean_text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidEvent(f"{field} is not a string")
    if not value or len(value) > MAX_FIELD_CHARS:
        raise InvalidEvent(f"{field} is empty or longer than {MAX_FIELD_CHARS} characters")
    if has_control_characters(value):
        raise InvalidEvent(f"{field} contains control characters")
    if has_encoded_word(value):
        raise InvalidEvent(f"{field} contains '=?', the start of a MIME encoded-word")
    if not value.isascii() and _has_lone_surrogate(value):
        # JSON's \ud800 escapes decode to halves of a character that no UTF-8 text can hold.
        raise InvalidEvent(f"{field} is not valid Unicode text (a lone surrogate)")
    return value


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def has_control_characters(text: str) -> bool:
    """True if `text` holds a character that could split a header line or a log line.

    C0, DEL, C1, and the Unicode line and paragraph separators. The producer refuses such input
    with this same rule, so what it stores always parses here.
    """
    return any(_is_control(char) for char in text)


def has_encoded_word(text: str) -> bool:
    """True if `text` could hold a MIME encoded-word (`=?charset?q?...?=`).

    Python's email package decodes encoded-words wherever a header is parsed, quoted display
    names included, so a name like `=?utf-8?q?Bcc=3A_x=40evil?=` would come out of the `To`
    header as `Bcc: x@evil`. No real name contains `=?`; refusing it is the simple, sure rule.
    The producer refuses such input with this same rule.
    """
    return "=?" in text


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code < 0xA0 or code in (0x2028, 0x2029)


def _uuid_text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidEvent(f"{field} is not a string")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidEvent(f"{field} is not a UUID") from None


def _aware_timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise InvalidEvent("occurred_at is not a string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent("occurred_at is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise InvalidEvent("occurred_at has no time zone")
    return moment


def _email_text(value: object) -> str:
    # A deliberately small syntactic check: the producer validated the address with
    # email-validator; here we only make sure it cannot smuggle anything into a header.
    email = _clean_text(value, "data.email")
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain or any(c in email for c in ' <>",;()[]\\'):
        raise InvalidEvent("data.email is not an email address")
    return email
