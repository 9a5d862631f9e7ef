"""The dead-letter breaker's state machine, with a fake clock."""

from __future__ import annotations

import threading

import pytest

from email_consumer.breaker import BreakerState, DeadLetterBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, threshold: int = 3) -> DeadLetterBreaker:
    return DeadLetterBreaker(threshold=threshold, probe_interval_s=10, clock=clock)


def test_refusals_of_different_recipients_in_a_row_open_it() -> None:
    breaker = _breaker(Clock())
    assert breaker.record_recipient_refusal("a@example.com", "550") is None
    assert breaker.record_recipient_refusal("b@example.com", "550") is None
    opened = breaker.record_recipient_refusal("c@example.com", "550 no such user")
    assert opened is not None
    assert opened.state is BreakerState.OPEN
    assert "3 different recipients" in opened.reason
    assert "550 no such user" in opened.reason
    assert breaker.is_open


def test_the_same_recipient_refused_again_counts_once() -> None:
    breaker = _breaker(Clock())
    for _ in range(10):
        breaker.record_recipient_refusal("bad@example.com", "550")
    breaker.record_recipient_refusal("BAD@example.com", "550")
    assert not breaker.is_open


def test_a_delivered_email_resets_the_count() -> None:
    breaker = _breaker(Clock())
    breaker.record_recipient_refusal("a@example.com", "550")
    breaker.record_recipient_refusal("b@example.com", "550")
    assert breaker.record_delivered() is None  # closed already: no transition
    breaker.record_recipient_refusal("c@example.com", "550")
    breaker.record_recipient_refusal("d@example.com", "550")
    assert not breaker.is_open


def test_one_server_refusal_opens_it_at_once_and_once_only() -> None:
    breaker = _breaker(Clock())
    opened = breaker.record_server_refusal("SMTP 530 to MAIL FROM")
    assert opened is not None
    assert opened.reason == "SMTP 530 to MAIL FROM"
    assert breaker.record_server_refusal("again") is None
    assert breaker.record_recipient_refusal("x@example.com", "550") is None
    assert breaker.state is BreakerState.OPEN


def test_while_open_one_event_per_probe_interval_is_tried() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    assert breaker.allow_attempt()
    breaker.record_server_refusal("530")
    assert not breaker.allow_attempt(), "the refusal was just seen: wait a full interval"
    clock.now += 9.9
    assert not breaker.allow_attempt()
    clock.now += 0.1
    assert breaker.allow_attempt()  # the probe
    assert not breaker.allow_attempt()  # everyone else keeps waiting
    clock.now += 10
    assert breaker.allow_attempt()


def test_an_accepted_probe_closes_it() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    breaker.record_server_refusal("530")
    clock.now += 10
    assert breaker.allow_attempt()
    closed = breaker.record_delivered()
    assert closed is not None
    assert closed.state is BreakerState.CLOSED
    assert all(breaker.allow_attempt() for _ in range(5))
    # Counting starts afresh after closing.
    breaker.record_recipient_refusal("a@example.com", "550")
    breaker.record_recipient_refusal("b@example.com", "550")
    assert not breaker.is_open


def test_concurrent_refusals_open_it_exactly_once() -> None:
    breaker = DeadLetterBreaker(threshold=50, probe_interval_s=10)
    transitions = []
    lock = threading.Lock()

    def refuse(start: int) -> None:
        for i in range(start, start + 25):
            moved = breaker.record_recipient_refusal(f"user{i}@example.com", "550")
            if moved is not None:
                with lock:
                    transitions.append(moved)

    threads = [threading.Thread(target=refuse, args=(n * 25,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(transitions) == 1
    assert breaker.is_open


def test_a_threshold_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        DeadLetterBreaker(threshold=0, probe_interval_s=1)
