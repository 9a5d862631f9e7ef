"""Writing a two-part (plain text and HTML) email straight to bytes, for the common case.

Building an `EmailMessage` and flattening it re-parses and re-folds every header: well over half
of the worker's CPU per email. A welcome email has one fixed shape, so this writes that shape
directly and leaves the encoding rules to the standard library (`email.header.Header` for RFC
2047 encoded-words, `binascii.b2a_qp` for the bodies). Safety does not rest on escaping user
text inside header syntax: a display name or subject is written as it is only when it is
printable ASCII on one line (a display name inside a quoted-string), else as encoded-words;
both bodies are quoted-printable, so the boundary (`=_...`) cannot occur in them; and only
plain dot-atom addresses (`is_plain_address`) come here, the rest go to the `email` package.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime
from typing import Final

CRLF: Final = b"\r\n"
# One header line should stay within 78 characters and must within 998 (RFC 5322 2.1.1).
_MAX_LINE: Final = 78
_MAX_SMTP_LINE: Final = 998
_ATEXT: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_ADDRESS: Final = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})*")
_PRINTABLE_ASCII: Final = re.compile(r"[\x20-\x7e]*")
# RFC 2046 5.1.1: at most 70 of these characters.
_BOUNDARY: Final = re.compile(r"=_[A-Za-z0-9'()+_,./:=?-]{1,68}")


def is_plain_address(address: str) -> bool:
    """True for `local@domain` in ASCII dot-atom form, which no header needs to quote."""
    return len(address) <= 254 and _PLAIN_ADDRESS.fullmatch(address) is not None


def _fits_as_is(name: str, value: str) -> bool:
    return len(name) + 2 + len(value) <= _MAX_LINE and _PRINTABLE_ASCII.fullmatch(value) is not None


def _encoded_words(name: str, value: str) -> bytes:
    return Header(value, "utf-8", header_name=name).encode(linesep="\r\n").encode("ascii")


def unstructured(name: str, value: str) -> bytes:
    """A `Name: value` line (folded when encoded) for free text such as a subject."""
    text = value.encode("ascii") if _fits_as_is(name, value) else _encoded_words(name, value)
    return name.encode("ascii") + b": " + text + CRLF


def identifier(name: str, value: str) -> bytes:
    """A `Name: value` line for an identifier (Message-ID, X-Event-ID), written as it is.

    Encoded-words are not allowed there (RFC 2047 5), so an identifier that is not printable
    ASCII, or too long for one line, is refused rather than encoded.
    """
    if _PRINTABLE_ASCII.fullmatch(value) is None or len(name) + 2 + len(value) > _MAX_SMTP_LINE:
        raise ValueError(f"{name} must be printable ASCII on one line")
    return f"{name}: {value}".encode("ascii") + CRLF


def date(name: str, when: datetime) -> bytes:
    """A `Name: Thu, 26 Nov 2026 06:42:45 +0000` line (RFC 5322 3.3), as the email package
    writes it; a time without a zone is written with `-0000` (zone unknown)."""
    return f"{name}: {format_datetime(when)}".encode("ascii") + CRLF


def mailbox(name: str, display_name: str, address: str) -> bytes:
    """An address header with one mailbox; `address` must pass `is_plain_address`."""
    if not is_plain_address(address):
        raise ValueError("not a plain dot-atom address")
    if not display_name:
        return f"{name}: {address}".encode("ascii") + CRLF
    quoted = '"' + display_name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    angle_address = f"<{address}>".encode("ascii")
    if _fits_as_is(name, f"{quoted} {angle_address.decode()}"):
        return f"{name}: {quoted} ".encode("ascii") + angle_address + CRLF
    # The encoded-words fill their last line as they please: the address goes on a line of its
    # own after them (folding white space may separate the two).
    phrase = _encoded_words(name, display_name)
    return name.encode("ascii") + b": " + phrase + CRLF + b" " + angle_address + CRLF


@dataclass(frozen=True, slots=True)
class Alternative:
    """One part of a multipart/alternative message: its subtype and its text."""

    subtype: str  # "plain" or "html"
    text: str


def multipart_alternative(headers: bytes, boundary: str, parts: tuple[Alternative, ...]) -> bytes:
    """The whole message: `headers` (complete lines), the MIME headers, then the parts.

    `boundary` must start with `=_`, which quoted-printable bodies cannot contain.
    """
    if _BOUNDARY.fullmatch(boundary) is None:
        raise ValueError("the boundary must start with '=_' and hold only RFC 2046 characters")
    delimiter = b"--" + boundary.encode("ascii")
    chunks = [
        headers,
        b"MIME-Version: 1.0\r\n",
        b'Content-Type: multipart/alternative;\r\n boundary="'
        + boundary.encode("ascii")
        + b'"\r\n',
        CRLF,
    ]
    for part in parts:
        chunks += [
            delimiter,
            CRLF,
            b"Content-Type: text/" + part.subtype.encode("ascii") + b'; charset="utf-8"\r\n',
            b"Content-Transfer-Encoding: quoted-printable\r\n",
            CRLF,
            quoted_printable(part.text),
            # The line break before a delimiter belongs to the delimiter, not to the part.
            CRLF,
        ]
    chunks += [delimiter, b"--", CRLF]
    return b"".join(chunks)


def quoted_printable(text: str) -> bytes:
    """`text` as UTF-8 quoted-printable lines (at most 76 characters), CRLF line endings.

    Ends with a line break, as the `email` package ends every text part.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    if not lines.endswith("\n"):
        lines += "\n"
    encoded = binascii.b2a_qp(lines.encode("utf-8"), istext=True)
    return encoded.replace(b"\n", CRLF)
