"""The retry policy as data: which failures go where, and how long in-process retries take."""

from __future__ import annotations

import contextlib

import pytest

from email_consumer.errors import SmtpRejected, SmtpUnavailable, UncertainDelivery
from email_consumer.retry_policy import UNCERTAIN, DeadLetter, RetryLater, RetryPolicy
from shared.errors import TransientError
from shared.topology import DEFAULT_RETRY_DELAYS_S


def test_defaults_are_documented_and_sane() -> None:
    policy = RetryPolicy()
    assert policy.broker_delays_s == DEFAULT_RETRY_DELAYS_S
    assert policy.attempts >= 2
    # Far below RabbitMQ's 30-minute consumer timeout.
    assert policy.max_total_s < 60


@pytest.mark.parametrize(
    ("retries_done", "expected"),
    [(0, RetryLater(1)), (1, RetryLater(2)), (2, RetryLater(5))],
)
def test_transient_failures_walk_through_the_delays(
    retries_done: int, expected: RetryLater
) -> None:
    policy = RetryPolicy(broker_delays_s=(1, 2, 5))
    assert policy.after_failure(permanent=False, broker_retries_done=retries_done) == expected


def test_after_the_last_delay_the_event_is_dead_lettered() -> None:
    policy = RetryPolicy(broker_delays_s=(1, 2))
    decision = policy.after_failure(permanent=False, broker_retries_done=2)
    assert decision == DeadLetter("retries-exhausted")


def test_permanent_failures_are_dead_lettered_at_once() -> None:
    policy = RetryPolicy(broker_delays_s=(1, 2))
    decision = policy.after_failure(permanent=True, broker_retries_done=0)
    assert decision == DeadLetter("permanent")


def test_no_delays_means_straight_to_the_dlq() -> None:
    policy = RetryPolicy(broker_delays_s=())
    assert isinstance(policy.after_failure(permanent=False, broker_retries_done=0), DeadLetter)


def _run(policy: RetryPolicy, errors: list[Exception]) -> tuple[int, list[float]]:
    sleeps: list[float] = []
    calls = 0
    retrying = policy.in_process()
    retrying.sleep = sleeps.append  # record instead of sleeping

    def attempt() -> None:
        nonlocal calls
        calls += 1
        if errors:
            raise errors.pop(0)

    # The final error is expected; the test inspects the calls and sleeps.
    with contextlib.suppress(TransientError, SmtpRejected):
        retrying(attempt)
    return calls, sleeps


def test_in_process_attempts_are_bounded_and_back_off_exponentially() -> None:
    policy = RetryPolicy(attempts=4, initial_backoff_s=1.0, max_backoff_s=3.0, max_total_s=600)
    calls, sleeps = _run(policy, [SmtpUnavailable("down")] * 10)
    assert calls == 4
    assert len(sleeps) == 3
    # 1, 2, capped at 3; each plus up to 1 s of jitter.
    for sleep, base in zip(sleeps, [1.0, 2.0, 3.0], strict=True):
        assert base <= sleep <= base + 1.0


def test_permanent_errors_are_not_retried_in_process() -> None:
    calls, sleeps = _run(RetryPolicy(attempts=4), [SmtpRejected(550, "no")])
    assert calls == 1
    assert sleeps == []


def test_the_total_time_bounds_in_process_retries() -> None:
    policy = RetryPolicy(attempts=100, initial_backoff_s=0.0, max_backoff_s=0.0, max_total_s=0.0)
    calls, _ = _run(policy, [SmtpUnavailable("down")] * 200)
    assert calls == 1


def test_the_last_error_is_reraised() -> None:
    policy = RetryPolicy(attempts=2, initial_backoff_s=0, max_backoff_s=0)
    messages = ["first", "second"]

    def attempt() -> None:
        raise SmtpUnavailable(messages.pop(0))

    with pytest.raises(TransientError, match="second"):
        policy.in_process()(attempt)


def test_an_event_busy_elsewhere_waits_without_using_up_a_retry() -> None:
    policy = RetryPolicy(broker_delays_s=(1, 2))
    decision = policy.after_failure(permanent=False, broker_retries_done=2, busy=True)
    assert decision == RetryLater(1, counts_as_retry=False)


def test_parking_takes_the_shortest_queue_long_enough_and_uses_up_no_retry() -> None:
    policy = RetryPolicy(broker_delays_s=(5, 30, 300))
    assert policy.park() == RetryLater(5, counts_as_retry=False)
    assert policy.park(at_least_s=6) == RetryLater(30, counts_as_retry=False)
    assert policy.park(at_least_s=300) == RetryLater(300, counts_as_retry=False)
    # Longer than every queue: the longest; the event comes back early and waits again.
    assert policy.park(at_least_s=1000) == RetryLater(300, counts_as_retry=False)
    assert RetryPolicy(broker_delays_s=()).park(otherwise="x") == DeadLetter("x")


def test_an_uncertain_send_waits_once_for_its_resend_then_goes_to_the_dlq() -> None:
    policy = RetryPolicy(broker_delays_s=(1, 2))
    assert policy.after_uncertain(final=False, resend_after_s=2) == RetryLater(
        2, counts_as_retry=False
    )
    assert policy.after_uncertain(final=True, resend_after_s=2) == DeadLetter(UNCERTAIN)
    # Without retry queues the DLQ holds it; a replay gives it its one resend.
    no_queues = RetryPolicy(broker_delays_s=())
    assert no_queues.after_uncertain(final=False, resend_after_s=2) == DeadLetter(UNCERTAIN)


def test_an_uncertain_send_is_never_retried_in_process() -> None:
    calls = []

    def attempt() -> None:
        calls.append(1)
        raise UncertainDelivery("no reply to the final dot")

    with pytest.raises(UncertainDelivery):
        RetryPolicy(attempts=5, initial_backoff_s=0, max_backoff_s=0).in_process()(attempt)
    assert len(calls) == 1
