"""The one backoff rule both services wait by."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import tenacity
from hypothesis import given
from hypothesis import strategies as st

from shared.amqp import BrokerRefused, BrokerUnavailable
from shared.backoff import Doubling, doubled, jittered, log_retry, tenacity_wait


def test_doubled_doubles_from_the_first_wait_up_to_the_cap() -> None:
    assert [doubled(0.5, times, 3.0) for times in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@given(st.integers(min_value=-5, max_value=sys.maxsize))
def test_doubled_never_overflows_or_goes_below_the_first_wait(times: int) -> None:
    wait_s = doubled(0.25, times, 60.0)
    assert 0.25 <= wait_s <= 60.0


@given(st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=5))
def test_jitter_adds_at_most_its_bound(delay_s: float, jitter_s: float) -> None:
    assert delay_s <= jittered(delay_s, jitter_s) <= delay_s + jitter_s


def test_doubling_grows_with_failures_and_starts_over_after_reset() -> None:
    doubling = Doubling(first_s=1.0, cap_s=4.0)
    assert [doubling.failed() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    doubling.reset()
    assert doubling.failed() == 1.0


def test_tenacity_wait_follows_the_same_doubling() -> None:
    wait = tenacity_wait(first_s=0.5, cap_s=3.0)
    waits = []
    for attempt in range(1, 6):
        state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
        state.attempt_number = attempt
        waits.append(wait(state))
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]


class _RecordingLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append(("error", event, fields))


@pytest.mark.parametrize(
    ("error", "level"),
    [(BrokerUnavailable("connection refused"), "warning"), (BrokerRefused("bad login"), "error")],
)
def test_log_retry_writes_one_line_per_wait_and_an_error_for_a_refusal(
    error: Exception, level: str
) -> None:
    log = _RecordingLog()
    attempts = iter([error, None])

    def flaky() -> str:
        failure = next(attempts)
        if failure is not None:
            raise failure
        return "done"

    retrying = tenacity.Retrying(
        wait=tenacity.wait_fixed(0.25),
        sleep=lambda _s: None,
        before_sleep=log_retry(log, "broker unavailable; retrying"),
    )
    assert retrying(flaky) == "done"
    assert log.lines == [
        (
            level,
            "broker unavailable; retrying",
            {
                "attempt": 1,
                "retry_in_s": 0.25,
                "error_type": type(error).__name__,
                "error": str(error),
            },
        )
    ]
