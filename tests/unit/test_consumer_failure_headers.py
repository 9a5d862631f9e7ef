"""The headers recording an event's failures, for retry queues, the DLQ and replays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from email_consumer import failure_headers as fh
from email_consumer.errors import SmtpRejected, SmtpUnavailable

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def test_the_first_failure_records_everything() -> None:
    headers = fh.after_failure(
        {"schema_version": 1},
        error=SmtpRejected(550, "5.1.1 no such user"),
        attempts=1,
        now=T0,
        host="worker-1",
        routing_key="user.registered",
        dead_letter_reason="permanent",
    )
    assert headers == {
        "schema_version": 1,
        "attempts": 1,
        "retry-count": 0,
        "first-failure-at": T0.isoformat(),
        "last-failure-at": T0.isoformat(),
        "error-type": "SmtpRejected",
        "error-message": "SMTP 550: 5.1.1 no such user",
        "smtp-code": 550,
        "worker-host": "worker-1",
        "original-routing-key": "user.registered",
        "dead-letter-reason": "permanent",
    }


def test_later_failures_accumulate_and_keep_the_first_time_and_routing_key() -> None:
    first = fh.after_failure(
        None,
        error=SmtpUnavailable("refused"),
        attempts=3,
        now=T0,
        host="w1",
        routing_key="user.registered",
        delayed_retry=True,
    )
    later = T0 + timedelta(seconds=30)
    second = fh.after_failure(
        first,
        error=SmtpUnavailable("timeout"),
        attempts=3,
        now=later,
        host="w2",
        routing_key="email_consumer.user_registered",
        delayed_retry=True,
    )
    assert second["attempts"] == 6
    assert second["retry-count"] == 2
    assert second["first-failure-at"] == T0.isoformat()
    assert second["last-failure-at"] == later.isoformat()
    assert second["original-routing-key"] == "user.registered"
    assert second["error-message"] == "timeout"
    assert second["worker-host"] == "w2"
    assert "smtp-code" not in second


def test_error_messages_are_cut_to_the_byte_budget_on_a_character_boundary() -> None:
    text = "é" * 5000
    cut = fh.cut_to_bytes(text)
    assert len(cut.encode("utf-8")) <= fh.ERROR_MESSAGE_BUDGET_BYTES
    assert cut.endswith("...")
    assert fh.cut_to_bytes("short") == "short"


def test_replay_clears_the_history_and_counts_the_replay() -> None:
    failed = fh.after_failure(
        {"schema_version": 1, "x-death": [{"count": 1}], "replay-count": 1},
        error=SmtpUnavailable("down"),
        attempts=9,
        now=T0,
        host="w",
        routing_key="user.registered",
        dead_letter_reason="retries-exhausted",
    )
    replayed = fh.for_replay(failed)
    assert replayed == {
        "schema_version": 1,
        "original-routing-key": "user.registered",
        "replay-count": 2,
    }


def test_header_values_of_odd_types_do_not_break_reading() -> None:
    assert fh.as_int({"attempts": b"7"}, "attempts") == 7
    assert fh.as_int({"attempts": "x"}, "attempts") == 0
    assert fh.as_int({"attempts": -3}, "attempts") == 0
    assert fh.as_text({"error-type": b"Oops"}, "error-type") == "Oops"
    assert fh.as_text({}, "error-type") is None


def test_crafted_huge_counters_are_clamped_so_the_copy_stays_encodable() -> None:
    huge = 2**63 - 1
    headers = fh.after_failure(
        {"attempts": huge, "retry-count": huge},
        error=SmtpUnavailable("down"),
        attempts=3,
        now=T0,
        host="w",
        routing_key="user.registered",
        delayed_retry=True,
    )
    assert headers["attempts"] == fh.MAX_COUNTER == 2**31 - 1
    assert headers["retry-count"] == fh.MAX_COUNTER
    assert fh.for_replay({"replay-count": huge})["replay-count"] == fh.MAX_COUNTER


def test_counters_that_are_not_whole_numbers_read_as_zero() -> None:
    for value in (True, 2.5, [1], {"a": 1}, b"12x", "-4", -(2**63)):
        assert fh.as_int({"attempts": value}, "attempts") == 0, value
    assert fh.as_int({"attempts": str(2**70)}, "attempts") == fh.MAX_COUNTER
