"""Time-ordered ids (UUID version 7, RFC 9562) for rows the database indexes by id.

A random UUID (version 4) lands on a random leaf of every B-tree index it is a key of: once a
table holds a million rows, each insert reads and dirties a page nobody touched for a while,
and the next checkpoint (SQLite) or vacuum (PostgreSQL) writes it again. A version 7 UUID
starts with the time in milliseconds, so new ids sort after the ones before them and each
insert goes to the same few pages at the end of the index, whatever the table's size. The
rest is random (74 bits), so two ids of the same millisecond still differ. The id tells its
creation time, which the event's `occurred_at` says anyway.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable

_VERSION = 7
_VARIANT = 0b10  # RFC 9562's variant, the same as version 4's
_RANDOM_A_BITS = 12
_RANDOM_B_BITS = 62


def uuid7(
    clock_ns: Callable[[], int] = time.time_ns,
    random_bits: Callable[[int], int] = secrets.randbits,
) -> uuid.UUID:
    """A new version 7 UUID: 48 bits of Unix time in ms, then 74 random bits."""
    milliseconds = (clock_ns() // 1_000_000) & ((1 << 48) - 1)
    value = milliseconds << 80
    value |= _VERSION << 76
    value |= random_bits(_RANDOM_A_BITS) << 64
    value |= _VARIANT << 62
    value |= random_bits(_RANDOM_B_BITS)
    return uuid.UUID(int=value)


def new_id() -> str:
    """A new id in the canonical 8-4-4-4-12 form the contract asks for."""
    return str(uuid7())
