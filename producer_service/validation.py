"""Checking what a user typed before anything is stored.

The rules are stated once here and quoted by `--help`, so the documentation cannot drift from
the code. Every failure raises `ValidationError` with one line fit for stderr.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from email_validator import EmailNotValidError, validate_email

from shared.display import quoted
from shared.errors import PermanentError
from shared.events import has_control_characters, has_encoded_word

USERNAME_MIN: Final = 3
USERNAME_MAX: Final = 32
FULL_NAME_MAX: Final = 200
# ASCII only on purpose: look-alike letters from other scripts (a Cyrillic "a" in
# "alice", say) would let one user pose as another in a welcome email.
_USERNAME_PATTERN: Final = re.compile(
    rf"[A-Za-z0-9][A-Za-z0-9_.\-]{{{USERNAME_MIN - 1},{USERNAME_MAX - 1}}}"
)

USERNAME_RULES: Final = (
    f"{USERNAME_MIN}-{USERNAME_MAX} characters: ASCII letters, digits, '_', '.' or '-', "
    "starting with a letter or digit; stored as typed, unique regardless of case"
)
EMAIL_RULES: Final = (
    "a syntactically valid address (no DNS lookup) with an ASCII part before the @; the domain "
    "is normalised (an international domain is stored in its ASCII xn-- form), and addresses "
    "are unique regardless of case; no control characters and no '=?'"
)
FULL_NAME_RULES: Final = (
    f"optional (leave the option out for none); 1-{FULL_NAME_MAX} characters once blanks at "
    "either end are trimmed; no control characters, and no '=?' (mail software would decode it "
    "as an encoded word)"
)


class ValidationError(PermanentError):
    """The input breaks a rule; the message is one line naming the field and the rule."""


@dataclass(frozen=True, slots=True)
class ValidRegistration:
    """Input that passed every rule, in the form it will be stored."""

    username: str
    email: str
    full_name: str | None


def validate_registration(username: str, email: str, full_name: str | None) -> ValidRegistration:
    # First, so text that cannot be stored or published gets one clear reason, not a rule's.
    for field, value in (
        ("username", username),
        ("email address", email),
        ("full name", full_name),
    ):
        _require_encodable(field, value)
    return ValidRegistration(
        username=validate_username(username),
        email=validate_email_address(email),
        full_name=validate_full_name(full_name),
    )


def validate_username(username: str) -> str:
    if _USERNAME_PATTERN.fullmatch(username) is None:
        raise ValidationError(f"invalid username {quoted(username)}: {USERNAME_RULES}")
    return username


def validate_email_address(email: str) -> str:
    """The normalised address in ASCII, or `ValidationError` with email-validator's reason.

    Only addresses every mail server can take are accepted: the worker's SMTP path does not use
    SMTPUTF8, so a mailbox name outside ASCII could only ever be dead-lettered. An international
    domain is fine; it is stored in its ASCII (punycode) form.
    """
    if has_control_characters(email):
        raise ValidationError("invalid email address: it contains control characters")
    if has_encoded_word(email):
        raise ValidationError("invalid email address: it contains '=?'")
    try:
        # No deliverability check: a registration must not depend on DNS answering.
        checked = validate_email(email, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        raise ValidationError(f"invalid email address {quoted(email)}: {error}") from None
    return str(checked.ascii_email)


def validate_full_name(full_name: str | None) -> str | None:
    """The name with surrounding blanks removed; None when absent.

    A blank name is refused: `--full-name ""` is most likely a script's empty variable, and
    storing no name for it would hide that.
    """
    if full_name is None:
        return None
    cleaned = full_name.strip()
    if not cleaned:
        raise ValidationError(
            "full name is empty; leave out --full-name to register without a full name"
        )
    if len(cleaned) > FULL_NAME_MAX:
        raise ValidationError(f"full name is longer than {FULL_NAME_MAX} characters")
    _require_encodable("full name", cleaned)
    if has_control_characters(cleaned):
        raise ValidationError("full name contains control characters")
    if has_encoded_word(cleaned):
        raise ValidationError("full name contains '=?', which mail software would decode")
    return cleaned


def username_key(username: str) -> str:
    """The form in which usernames are compared: 'Alice' and 'alice' are the same user."""
    return username.lower()


def email_key(email: str) -> str:
    """The form in which normalised addresses are compared, ignoring case throughout."""
    return email.lower()


def _require_encodable(field: str, value: str | None) -> None:
    # Bytes that are not UTF-8 on the command line reach Python as lone surrogates; they can be
    # neither stored nor published, so they are refused here as invalid input.
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{field} is not valid UTF-8 text") from None
