"""Showing a value that someone else chose (a message id, a name, an argument) on a terminal.

A terminal obeys the control characters it prints: an escape sequence inside a message id can
clear the operator's screen or rewrite what it shows, a carriage return can hide the start of a
line, a bidirectional override can reorder it. Every value a command prints that it did not write
itself goes through `printable` (or `quoted`, `json_line`), so it shows as text and stays on one
line.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any, Final

# C0 and C1 controls, DEL, and the format characters (bidirectional overrides, zero-width
# joiners, ...), line and paragraph separators, lone surrogates: nothing a terminal should obey.
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
ELLIPSIS: Final = "..."


def is_unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(value: object, limit: int | None = None) -> str:
    """`value` as text with every control or format character written as `\\x..`/`\\u....`.

    With `limit`, at most that many characters are kept (then `...`), counted after escaping;
    an escape is never cut in half.
    A backslash is left alone: the result is for reading, not for parsing back.
    """
    text = value if isinstance(value, str) else str(value)
    pieces = [_escape(char) if is_unsafe(char) else char for char in text]
    if limit is None or sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    # Cut between pieces, never inside an escape, leaving room for the ellipsis.
    kept, room = [], max(limit - len(ELLIPSIS), 0)
    for piece in pieces:
        if len(piece) > room:
            break
        kept.append(piece)
        room -= len(piece)
    return "".join(kept) + ELLIPSIS


def quoted(value: object, limit: int = 60) -> str:
    """`printable(value)` in single quotes; a truncated value keeps its closing quote."""
    return "'" + printable(value, limit=max(limit - 2, len(ELLIPSIS))) + "'"


def json_line(document: Any) -> str:
    """One JSON line that decodes to `document` and that a terminal shows as it is.

    `json.dumps` escapes C0 controls but leaves C1 controls (0x9b is a CSI on many terminals),
    DEL and Unicode format characters raw with `ensure_ascii=False`; they are escaped here as
    `\\uXXXX`, which decodes to the same value.
    """
    text = json.dumps(document, ensure_ascii=False)
    return "".join(_json_escape(char) if is_unsafe(char) else char for char in text)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # outside the BMP: a UTF-16 surrogate pair, as JSON writes it
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
