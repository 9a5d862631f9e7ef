"""The welcome email: headers built safely, user values escaped in HTML, plain text intact."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from email_consumer.errors import UndeliverableMessage
from email_consumer.rendering import WelcomeRenderer
from email_consumer.settings import parse_mail_from
from shared.events import UserRegistered, new_user_registered

EVENT_ID = "6f1c0c3e-8a8e-4d55-9a39-3f7f4b8a2c11"


OCCURRED_AT = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _event(
    username: str = "alice",
    email_address: str = "alice@example.com",
    full_name: str | None = "Alice Liddell",
) -> UserRegistered:
    return new_user_registered(
        user_id="0b6f3c52-2f5e-4b35-8d0e-8f2b7f0b7b1a",
        username=username,
        email=email_address,
        full_name=full_name,
        event_id=EVENT_ID,
        # Fixed: the Date header is the event's time, and two renders compared byte for byte
        # must not straddle a second.
        occurred_at=OCCURRED_AT,
    )


@pytest.fixture(scope="module")
def renderer() -> WelcomeRenderer:
    return WelcomeRenderer(parse_mail_from("Example <welcome@example.com>"))


def _wire(renderer: WelcomeRenderer, event: UserRegistered) -> email.message.EmailMessage:
    """The rendered email as the mail server will read it: parsed back from its bytes."""
    message = email.message_from_bytes(renderer.render(event).data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def _parts(message: email.message.EmailMessage) -> tuple[str, str]:
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None
    assert html is not None
    return plain.get_content(), html.get_content()


def test_headers_follow_the_contract(renderer: WelcomeRenderer) -> None:
    message = _wire(renderer, _event())
    assert message["To"] == "Alice Liddell <alice@example.com>"
    assert message["From"] == "Example <welcome@example.com>"
    assert message["Subject"] == "Welcome, Alice Liddell!"
    assert message["Message-ID"] == f"<{EVENT_ID}@example.com>"
    assert message["X-Event-ID"] == EVENT_ID


# What a receiving mail server expects of every message (RFC 5322 3.6: Date and From are
# required, once each; To, Subject and Message-ID once at most, and here always) and of a MIME
# one (RFC 2045: MIME-Version, and each part's type and transfer encoding).
_ONCE_EACH = ("Date", "From", "To", "Subject", "Message-ID", "MIME-Version", "Content-Type")


@pytest.mark.parametrize(
    "address", ["alice@example.com", "zoe@bücher.example"], ids=["direct", "email-package"]
)
@pytest.mark.parametrize("way", ["render", "render_with_email_package"])
def test_every_header_a_mail_server_expects_is_there_once(
    renderer: WelcomeRenderer, address: str, way: str
) -> None:
    event = _event(email_address=address)
    data = getattr(renderer, way)(event).data
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    for name in _ONCE_EACH:
        assert len(message.get_all(name) or []) == 1, name
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "multipart/alternative"
    sent_at = message["Date"].datetime
    assert sent_at.utcoffset() is not None
    assert sent_at == event.occurred_at.replace(microsecond=0)
    for part, subtype in zip(message.iter_parts(), ("plain", "html"), strict=True):
        assert part.get_content_type() == f"text/{subtype}"
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"


def test_without_a_full_name_the_username_is_greeted(renderer: WelcomeRenderer) -> None:
    message = _wire(renderer, _event(full_name=None))
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Welcome, alice!"


def test_html_escapes_user_values_and_plain_text_keeps_them(renderer: WelcomeRenderer) -> None:
    name = '<script>alert("x")</script> & Co'
    plain, html = _parts(_wire(renderer, _event(full_name=name)))
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "&amp; Co" in html
    assert name in plain


def test_a_name_shaped_like_headers_stays_inside_the_to_header(renderer: WelcomeRenderer) -> None:
    name = 'Eve" <eve@evil.example>, Bcc: victim@example.com'
    reparsed = _wire(renderer, _event(full_name=name))
    assert reparsed["Bcc"] is None
    assert reparsed["To"].addresses[0].addr_spec == "alice@example.com"
    assert reparsed["To"].addresses[0].display_name == name
    assert len(reparsed["To"].addresses) == 1


def test_the_envelope_goes_from_mail_from_to_the_user(renderer: WelcomeRenderer) -> None:
    rendered = renderer.render(_event(full_name='Eve" <eve@evil.example>'))
    assert rendered.envelope_from == "welcome@example.com"
    assert rendered.envelope_to == "alice@example.com"
    assert rendered.message_id == f"<{EVENT_ID}@example.com>"


def test_the_bytes_are_ready_for_smtp(renderer: WelcomeRenderer) -> None:
    data = renderer.render(_event(full_name="Zoë")).data
    lines = data.split(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b""), "every line ends in CRLF"
    assert max(len(line) for line in lines) <= 998
    assert data.startswith(b"To: ")


def test_an_address_the_envelope_cannot_carry_is_a_permanent_error(
    renderer: WelcomeRenderer,
) -> None:
    with pytest.raises(UndeliverableMessage):
        renderer.render(_event(email_address="zoë@example.com"))


def test_non_ascii_names_are_encoded_not_dropped(renderer: WelcomeRenderer) -> None:
    raw = renderer.render(_event(full_name="Zoë Ünïcode")).data
    assert raw.isascii()
    reparsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert reparsed["Subject"] == "Welcome, Zoë Ünïcode!"


_printable_name = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=60
)


@given(name=_printable_name)
def test_no_full_name_adds_or_changes_a_header(name: str) -> None:
    renderer = WelcomeRenderer(parse_mail_from("Example <welcome@example.com>"))
    reparsed = _wire(renderer, _event(full_name=name))
    assert sorted(reparsed.keys()) == sorted(
        [
            "To",
            "From",
            "Subject",
            "Date",
            "Message-ID",
            "X-Event-ID",
            "MIME-Version",
            "Content-Type",
        ]
    )
    assert [a.addr_spec for a in reparsed["To"].addresses] == ["alice@example.com"]
    assert reparsed["X-Event-ID"] == EVENT_ID


# -- the direct writer against the email package ---------------------------------------------

_dot_atoms = st.text(
    alphabet=st.sampled_from("abcxyzABC019!#$%&'*+/=?^_`{|}~-"), min_size=1, max_size=12
).filter(lambda text: "=?" not in text)
_plain_addresses = st.builds(
    lambda local, more, domain: f"{local}{'.' + more if more else ''}@{domain}",
    _dot_atoms,
    st.none() | _dot_atoms,
    st.sampled_from(["example.com", "mail.example.org", "x-y.example"]),
)
_any_name = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=120
).filter(lambda text: "=?" not in text)


def _as_read(data: bytes) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Headers (name, parsed value) and parts (type, decoded text) as a mail client reads them."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    headers = [
        (name, re.sub(r"\s+", " ", str(value)))
        for name, value in message.items()
        if name != "Content-Type"  # the boundaries differ by design
    ]
    parts = [(part.get_content_type(), part.get_content()) for part in message.iter_parts()]
    return headers, parts


def _unspaced(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _without_white_space(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, _unspaced(value)) for name, value in headers]


@settings(max_examples=300, deadline=None)
@given(
    username=_any_name,
    address=_plain_addresses,
    full_name=st.none() | _any_name,
)
def test_the_direct_writer_says_what_the_email_package_says(
    username: str, address: str, full_name: str | None
) -> None:
    renderer = WelcomeRenderer(parse_mail_from("Example Team <welcome@example.com>"))
    event = _event(username=username, email_address=address, full_name=full_name)
    written = renderer.render(event)
    built = renderer.render_with_email_package(event)
    assert written.data != built.data, "render did not take the direct path"
    # White space aside, the direct writer's headers carry the intended text and read like the
    # email package's. Where a long header is folded into encoded-words, the standard library
    # itself is no oracle for spaces: its writer can drop a space at a fold, and its reader can
    # add one between the words of a display name (RFC 2047 says to ignore it there).
    message = email.message_from_bytes(written.data, policy=email.policy.default)
    [to] = message["To"].addresses
    assert _unspaced(str(message["Subject"])) == _unspaced(f"Welcome, {full_name or username}!")
    assert (_unspaced(to.display_name), to.addr_spec) == (_unspaced(full_name or ""), address)
    headers, parts = _as_read(written.data)
    package_headers, package_parts = _as_read(built.data)
    assert parts == package_parts
    assert _without_white_space(headers) == _without_white_space(package_headers)
    assert (written.envelope_from, written.envelope_to) == (built.envelope_from, built.envelope_to)
    assert max(len(line) for line in written.data.split(b"\r\n")) <= 78
    assert b"\n" not in written.data.replace(b"\r\n", b"")


def test_the_same_event_is_written_to_the_same_bytes(renderer: WelcomeRenderer) -> None:
    assert renderer.render(_event()).data == renderer.render(_event()).data


@pytest.mark.parametrize(
    "address", ['"quoted"@example.com', "a..b@example.com", ".a@example.com", "a@例え.jp"]
)
def test_other_addresses_go_through_the_email_package_or_are_refused(
    renderer: WelcomeRenderer, address: str
) -> None:
    try:
        rendered = renderer.render(_event(email_address=address))
    except UndeliverableMessage:
        return
    built = renderer.render_with_email_package(_event(email_address=address))
    assert _as_read(rendered.data) == _as_read(built.data)
    assert rendered.envelope_to == built.envelope_to


def test_an_international_domain_is_written_in_ascii(renderer: WelcomeRenderer) -> None:
    rendered = renderer.render(_event(email_address="zoe@bücher.example"))
    assert rendered.envelope_to == "zoe@xn--bcher-kva.example"
    assert rendered.data.isascii()
    assert _wire(renderer, _event(email_address="zoe@bücher.example"))["To"].addresses[
        0
    ].addr_spec == ("zoe@xn--bcher-kva.example")


def test_text_no_encoder_can_take_is_a_permanent_error_not_a_crash(
    renderer: WelcomeRenderer,
) -> None:
    # The parser refuses lone surrogates; the renderer must not crash if one got through.
    with pytest.raises(UndeliverableMessage):
        renderer.render(_event(full_name="Zo\ud800"))


def test_a_long_sender_domain_keeps_the_message_id_unencoded() -> None:
    # Encoded-words are not allowed in a Message-ID: a long one stays as it is, on one line.
    domain = "notifications.a-rather-long-company-name.example"
    renderer = WelcomeRenderer(parse_mail_from(f"Example <welcome@{domain}>"))
    data = renderer.render(_event()).data
    assert f"\r\nMessage-ID: <{EVENT_ID}@{domain}>\r\n".encode() in data
    assert b"=?" not in data.split(b"\r\n\r\n", 1)[0]
