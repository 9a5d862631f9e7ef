"""Values shown on a terminal: control and format characters escaped, JSON still the value."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from shared.display import json_line, printable, quoted

CONTROLS = "\x00\x07\x08\x1b\r\n\x7f\x85\x9b\u200b\u202e\u2028\u2066\ufeff"


def test_every_control_and_format_character_is_escaped() -> None:
    shown = printable("a" + CONTROLS + "b")
    assert shown == (
        "a\\x00\\x07\\x08\\x1b\\x0d\\x0a\\x7f\\x85\\x9b\\u200b\\u202e\\u2028\\u2066\\ufeffb"
    )


def test_ordinary_text_is_left_as_it_is() -> None:
    assert printable("Zoë Ünal 山田 <a@b.example> \\ 'q'") == "Zoë Ünal 山田 <a@b.example> \\ 'q'"


def test_a_limit_cuts_after_escaping_and_says_so() -> None:
    assert printable("\x1b" * 10, limit=9) == "\\x1b..."
    assert printable("short", limit=9) == "short"


def test_quoted_keeps_its_closing_quote_when_cut() -> None:
    assert quoted("x" * 100, limit=12) == "'xxxxxxx...'"
    assert quoted("ab") == "'ab'"


@given(st.text())
def test_printable_output_has_no_control_character(text: str) -> None:
    shown = printable(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in shown)


@given(st.dictionaries(st.text(max_size=5), st.text() | st.none() | st.integers(), max_size=4))
def test_a_json_line_decodes_to_the_same_value_and_shows_no_control(document: dict) -> None:  # type: ignore[type-arg]
    line = json_line(document)
    assert json.loads(line) == document
    assert "\n" not in line
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c == "\u202e" for c in line)
