"""No user value can add, remove or alter an email header, nor reach the HTML as markup.

Events are built as the worker receives them: JSON bytes accepted by
`shared.events.parse_user_registered`. The rendered email is serialised, parsed back with the
`email` package as a mail server or client would, and checked: only allow-listed headers, each
once; the recipient is exactly the user's address; the fixed headers are untouched; the user's
text appears in the HTML only as text.
"""

from __future__ import annotations

import json
import re
import uuid
from email import message_from_bytes, policy
from email.headerregistry import AddressHeader
from email.message import EmailMessage
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from email_consumer.errors import UndeliverableMessage
from email_consumer.rendering import WelcomeRenderer, ascii_domain_address
from email_consumer.settings import parse_mail_from
from shared.events import InvalidEvent, UserRegistered, parse_user_registered

MAIL_FROM = "Example <welcome@example.com>"
EVENT_ID = "6f1c0c3e-8a8e-4d55-9a39-3f7f4b8a2c11"
TOP_LEVEL_HEADERS = frozenset(
    {"From", "To", "Subject", "Date", "Message-ID", "X-Event-ID", "MIME-Version", "Content-Type"}
)
PART_HEADERS = frozenset({"Content-Type", "Content-Transfer-Encoding", "MIME-Version"})
# The elements and attributes of the templates themselves; user text must add none.
TEMPLATE_TAGS = frozenset({"html", "head", "meta", "title", "body", "p", "strong"})
TEMPLATE_ATTRIBUTES = frozenset({("html", "lang"), ("meta", "charset")})

# Pieces an attacker would try, mixed with arbitrary text by the strategies below.
HOSTILE_PIECES = [
    "\r\nBcc: victim@evil.example",
    "\nX-Injected: 1",
    "\r\n\r\n<h1>body</h1>",
    "\u2028Bcc: x@evil.example",
    "\u0085Bcc: x@evil.example",
    "=?utf-8?q?Bcc=3A_x=40evil.example?=",
    "=?utf-8?b?QmNjOiB4QGV2aWwuZXhhbXBsZQ==?=",
    "=?iso-8859-1?q?=0D=0ABcc:_x@evil.example?=",
    "x@evil.example, ",
    "<x@evil.example>",
    '"Eve" <eve@evil.example>',
    "Bcc: x@evil.example;",
    "undisclosed:;",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "&lt;b&gt;",
    "{{ 7*7 }}",
    "'\"`",
    "\\",
    "Ünïcödé ☃ 名前",
    "\u202egnp.exe",
]

hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(min_size=1, max_size=12)),
    min_size=1,
    max_size=5,
).map("".join)

local_parts = st.text(
    alphabet=st.characters(codec="ascii", exclude_characters=' <>",;()[]\\\r\n\t\x00'),
    min_size=1,
    max_size=30,
).filter(lambda text: text.isprintable())
hostile_local_parts = st.one_of(
    local_parts, st.sampled_from(["=?utf-8?q?x=40evil.example?=", "a=?x?=b", "'o'brien", "x+y"])
)
emails = st.builds(
    lambda local, domain: f"{local}@{domain}",
    hostile_local_parts,
    # 例え.jp and ex_ample.com are not plain dot-atom domains: they take the renderer's other path.
    st.sampled_from(["example.com", "例え.jp", "mail.example.org", "ex_ample.com"]),
)


def _body(username: str, email: str, full_name: str | None) -> bytes:
    document = {
        "event_id": EVENT_ID,
        "event_type": "user_registered",
        "schema_version": 1,
        "occurred_at": "2026-11-26T06:42:45.123456+00:00",
        "data": {
            "user_id": str(uuid.UUID(int=7)),
            "username": username,
            "email": email,
            "full_name": full_name,
        },
    }
    return json.dumps(document).encode()


@pytest.fixture(scope="module")
def renderer() -> WelcomeRenderer:
    return WelcomeRenderer(parse_mail_from(MAIL_FROM))


def _received(renderer: WelcomeRenderer, event: UserRegistered) -> EmailMessage | None:
    """The email as the mail server receives it, or None if the worker refuses to build it."""
    try:
        rendered = renderer.render(event)
    except UndeliverableMessage:
        # Refusing is safe: the event goes to the DLQ and no email is sent.
        return None
    # The envelope recipient (RCPT TO) must be the user's address too.
    assert rendered.envelope_to == ascii_domain_address(event.data.email)
    parsed = message_from_bytes(rendered.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _squash(text: str) -> str:
    # Folding long encoded words may add or drop whitespace between them (a limit of the
    # `email` package); whitespace is not what an attacker controls here, the rest is.
    return re.sub(r"\s+", "", text)


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: set[tuple[str, str]] = set()
        self.comments: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update((tag, name) for name, _ in attrs)

    def handle_endtag(self, tag: str) -> None:
        self.tags.add(tag)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _check_headers(message: EmailMessage, event: UserRegistered) -> None:
    names = list(message.keys())
    assert set(names) <= TOP_LEVEL_HEADERS, names
    assert sorted(names) == sorted(set(names)), f"a header appears twice: {names}"
    assert message["From"] == MAIL_FROM
    assert message["Message-ID"] == f"<{EVENT_ID}@example.com>"
    assert message["X-Event-ID"] == EVENT_ID

    to = message["To"]
    assert isinstance(to, AddressHeader)
    # Exactly one recipient, outside any group, and it is the user's address: the renderer
    # takes the envelope recipient from this very address.
    assert to.groups[0].display_name is None, f"To became a group: {str(to)!r}"
    (address,) = to.addresses
    assert address.addr_spec == ascii_domain_address(event.data.email)
    assert _squash(address.display_name) == _squash(event.data.full_name or "")

    greeting = event.data.full_name or event.data.username
    assert _squash(str(message["Subject"])) == _squash(f"Welcome, {greeting}!")


def _check_parts(message: EmailMessage, event: UserRegistered) -> None:
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    for part in parts:
        assert set(part.keys()) <= PART_HEADERS, list(part.keys())

    markup = _Markup()
    html = parts[1].get_content()
    markup.feed(html)
    markup.close()
    assert markup.tags <= TEMPLATE_TAGS, markup.tags
    assert markup.attributes <= TEMPLATE_ATTRIBUTES, markup.attributes
    assert not markup.comments
    # Each user value comes out of the HTML as the very text the user typed.
    text = "".join(markup.text)
    for value in (event.data.username, event.data.email, event.data.full_name):
        if value is not None:
            assert value in text


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(username=hostile_text, email=emails, full_name=st.none() | hostile_text)
@example(username="alice", email="alice@example.com", full_name="=?utf-8?q?Bcc=3A_x=40evil?=")
@example(username="<script>", email="a@example.com", full_name='Eve" <e@evil.example> , x')
@example(username="=?utf-8?q?x=40evil.example?=", email="b@example.com", full_name=None)
# The email package folds a long display name with specials without its quotes (a CPython
# bug): the first gave a To with six addresses, the second a group hiding the user.
@example(username="alice", email="alice@例え.jp", full_name="x@evil.example, " * 5)
@example(username="alice", email="alice@ex_ample.com", full_name="Bcc: " + "x" * 80 + ";")
@example(username="alice", email="alice@ex_ample.com", full_name='"x@evil.example, "' * 5)
@example(username="alice", email="alice@例え.jp", full_name="Bcc: x@evil.example; " * 4)
def test_no_user_value_alters_a_header_or_reaches_the_html(
    renderer: WelcomeRenderer, username: str, email: str, full_name: str | None
) -> None:
    try:
        event = parse_user_registered(_body(username, email, full_name))
    except InvalidEvent:
        return  # refused before rendering: dead-lettered, never emailed
    message = _received(renderer, event)
    if message is None:
        return
    _check_headers(message, event)
    _check_parts(message, event)


@pytest.mark.parametrize(
    "full_name",
    [
        "<script>alert(1)</script>",
        'Eve" <eve@evil.example>, Bob',
        "Mallory\u202e",
        "Ünïcödé ☃ 名前 " * 10,
        "x@evil.example, " * 5,
        "Bcc: " + "x" * 80 + ";",
    ],
)
@pytest.mark.parametrize(
    "email", ["mallory@example.com", "mallory@例え.jp", "mallory@ex_ample.com"]
)
def test_hostile_but_valid_names_are_delivered_not_refused(
    renderer: WelcomeRenderer, full_name: str, email: str
) -> None:
    # Refusing everything would pass the fuzz test; these names are legitimate to send, to a
    # plain address and to the two kinds that are not (an international domain, an
    # underscore in the domain).
    event = parse_user_registered(_body("mallory", email, full_name))
    message = _received(renderer, event)
    assert message is not None
    _check_headers(message, event)
    _check_parts(message, event)


@pytest.mark.parametrize(
    "line_break", ["\r\n", "\n", "\r", "\u2028", "\u2029", "\u0085", "\x0b", "\x0c"]
)
def test_line_breaks_in_any_field_are_refused_before_rendering(line_break: str) -> None:
    for body in (
        _body(f"bob{line_break}Bcc: x@evil.example", "bob@example.com", None),
        _body("bob", "bob@example.com", f"Bob{line_break}Bcc: x@evil.example"),
        _body("bob", f"bob{line_break}@example.com", None),
    ):
        with pytest.raises(InvalidEvent):
            parse_user_registered(body)
