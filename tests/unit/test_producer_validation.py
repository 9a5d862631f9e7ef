"""Registration input rules: what is accepted, how it is stored, and one-line errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer_service.validation import (
    ValidationError,
    email_key,
    username_key,
    validate_email_address,
    validate_full_name,
    validate_registration,
    validate_username,
)
from shared.events import has_control_characters


@pytest.mark.parametrize("username", ["abc", "Alice", "a.b-c_d", "0day", "x" * 32, "Bob_99"])
def test_valid_usernames_are_kept_as_typed(username: str) -> None:
    assert validate_username(username) == username


@pytest.mark.parametrize(
    "username",
    [
        "",
        "ab",
        "x" * 33,
        "_alice",
        ".alice",
        "-alice",
        "al ice",
        "alice!",
        "ålice",
        "\u0430lice",  # Cyrillic a
        "a\nb",
    ],
)
def test_invalid_usernames_are_refused_naming_the_rule(username: str) -> None:
    with pytest.raises(ValidationError, match="3-32 characters"):
        validate_username(username)


def test_usernames_compare_without_case() -> None:
    assert username_key("Alice") == username_key("aLICE") == "alice"


def test_email_domain_is_normalised_and_keys_ignore_case() -> None:
    assert validate_email_address("Alice@EXAMPLE.Com") == "Alice@example.com"
    assert email_key("Alice@example.com") == email_key("alice@EXAMPLE.com")


@pytest.mark.parametrize(
    "email",
    [
        "",
        "alice",
        "alice@",
        "@example.com",
        "alice@@example.com",
        "alice@example.com\r\nBcc: x@example.com",
        "Alice <alice@example.com>",
        '"a b"@example.com',
        "alice@localhost",
    ],
)
def test_invalid_emails_are_refused(email: str) -> None:
    with pytest.raises(ValidationError, match="invalid email address"):
        validate_email_address(email)


def test_email_check_needs_no_dns() -> None:
    # A domain that cannot exist in DNS is still syntactically fine: no network is consulted.
    assert validate_email_address("a@no-such-domain-for-tests.example") == (
        "a@no-such-domain-for-tests.example"
    )


@pytest.mark.parametrize(
    ("given_name", "stored"),
    [
        (None, None),
        ("  Alice Liddell ", "Alice Liddell"),
        ("Zoë", "Zoë"),
    ],
)
def test_full_name_is_optional_and_trimmed(given_name: str | None, stored: str | None) -> None:
    assert validate_full_name(given_name) == stored


@pytest.mark.parametrize(
    "name",
    ["Alice\nBcc: x", "A\x00B", "A\x7fB", "A\u2028B", "x" * 201, "=?utf-8?q?Bcc=3A_x=40evil?="],
)
def test_full_name_that_could_alter_a_header_or_too_long_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="full name"):
        validate_full_name(name)


def test_a_full_name_of_200_characters_is_accepted() -> None:
    assert validate_full_name("x" * 200) == "x" * 200


def test_validate_registration_checks_every_field() -> None:
    valid = validate_registration("alice", "alice@Example.com", " Alice ")
    assert (valid.username, valid.email, valid.full_name) == ("alice", "alice@example.com", "Alice")


def _refusal(check: Callable[[str], object], text: str) -> str:
    try:
        check(text)
    except ValidationError as error:
        return str(error)
    return ""


@given(st.text(max_size=80))
def test_any_refusal_is_a_single_line(text: str) -> None:
    for check in (validate_username, validate_email_address, validate_full_name):
        message = _refusal(check, text)
        assert "\n" not in message
        assert "\r" not in message


@pytest.mark.parametrize("email", ["ålice@example.com", "алиса@example.com", "\udcff@example.com"])
def test_a_mailbox_name_outside_ascii_is_refused_because_it_could_never_be_sent(
    email: str,
) -> None:
    # The worker's SMTP path has no SMTPUTF8: such an address could only be dead-lettered.
    with pytest.raises(ValidationError, match=r"invalid email address.*before the @-sign"):
        validate_email_address(email)


def test_an_international_domain_is_stored_in_its_ascii_form() -> None:
    assert validate_email_address("alice@exämple.com") == "alice@xn--exmple-cua.com"


@pytest.mark.parametrize(
    ("username", "email", "full_name", "field"),
    [
        ("alice\udcff", "alice@example.com", None, "username"),
        ("alice", "alice\udcff@example.com", None, "email address"),
        ("alice", "alice@example.com", "Alice \udcff", "full name"),
    ],
)
def test_text_that_is_not_utf8_is_refused_with_one_clear_line(
    username: str, email: str, full_name: str | None, field: str
) -> None:
    # Bytes that are not UTF-8 on a command line reach Python as lone surrogates.
    with pytest.raises(ValidationError, match=f"^{field} is not valid UTF-8 text$"):
        validate_registration(username, email, full_name)


def test_a_lone_surrogate_in_a_full_name_is_refused_on_its_own_too() -> None:
    with pytest.raises(ValidationError, match="full name is not valid UTF-8 text"):
        validate_full_name("\udcff")


def test_the_control_character_rule_is_the_one_the_event_parser_applies() -> None:
    for text in ("a\x85b", "a\u2029b", "a\x1bb"):
        assert has_control_characters(text)
        with pytest.raises(ValidationError, match="control characters"):
            validate_full_name(text)
    assert not has_control_characters("Zoë Ünal")


def test_an_address_holding_an_encoded_word_is_refused() -> None:
    with pytest.raises(ValidationError, match="=\\?"):
        validate_email_address("=?utf-8?q?x?=@example.com")


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_a_blank_full_name_is_refused_not_dropped(blank: str) -> None:
    with pytest.raises(ValidationError, match="full name is empty; leave out --full-name"):
        validate_full_name(blank)


def test_a_long_value_cut_short_in_an_error_keeps_its_closing_quote() -> None:
    with pytest.raises(ValidationError) as refused:
        validate_username("!" + "x" * 300)
    quoted_value = str(refused.value).removeprefix("invalid username ").partition(": ")[0]
    assert quoted_value.startswith("'!xxx")
    assert quoted_value.endswith("...'")
    assert len(quoted_value) <= 60


def test_an_escape_sequence_in_a_value_is_shown_escaped_in_the_error() -> None:
    with pytest.raises(ValidationError) as refused:
        validate_username("a\x1b[2Jb")
    assert "\x1b" not in str(refused.value)
    assert "'a\\x1b[2Jb'" in str(refused.value)


def test_the_help_texts_state_the_encoded_word_rule() -> None:
    from producer_service.validation import EMAIL_RULES, FULL_NAME_RULES

    assert "'=?'" in FULL_NAME_RULES
    assert "'=?'" in EMAIL_RULES
