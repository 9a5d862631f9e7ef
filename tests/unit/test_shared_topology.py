"""The one line a topology mismatch becomes, from RabbitMQ's PRECONDITION_FAILED text."""

from __future__ import annotations

from shared.topology import mismatch_message

# As RabbitMQ 3.10.8 and 4.0.5 word it (measured 2026-12-01).
MISSING_LIMIT = (
    "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue "
    "'email_consumer.user_registered' in vhost 'prod': received the value '10' of type "
    "'signedint' but current is none"
)


def test_the_line_names_the_queue_and_the_argument_and_leaves_out_the_vhost() -> None:
    line = mismatch_message(MISSING_LIMIT)
    assert line == (
        "queue 'email_consumer.user_registered' differs from this version's topology "
        "(x-delivery-limit: received the value '10' of type 'signedint' but current is none); "
        "re-create it as docs/CONTRACT.md lists"
    )


def test_an_unknown_wording_is_kept_escaped_and_bounded() -> None:
    line = mismatch_message("PRECONDITION_FAILED - something new\x1b[2J" + "x" * 500)
    assert line.startswith("the broker's topology differs from this version's: something new\\x1b")
    assert len(line) < 250
    assert "\x1b" not in line
