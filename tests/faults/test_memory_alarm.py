"""The broker's memory alarm raised: publishers are blocked, registration must not be."""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import TEST_TIMEOUT_S, Stack, account, record, scaled

pytestmark = [pytest.mark.private_node, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT_S)]


def test_registrations_succeed_under_a_memory_alarm_and_are_delivered_after_it(
    stack: Stack,
) -> None:
    stack.start_relay()
    worker = stack.start_worker()
    before = stack.run("producer-service", "register", "early", "early@example.com")
    assert before.returncode == 0, before.stderr
    stack.wait_for(lambda: len(stack.smtp.messages) == 1, 60, "the first email")

    # A watermark of 0 raises the alarm at once: RabbitMQ blocks every publishing connection.
    stack.node.rabbitmqctl("set_vm_memory_high_watermark", "0")
    alarm_raised = time.monotonic()
    outcomes = []
    register_seconds = []
    for number in range(scaled(3, 10)):
        started = time.monotonic()
        # A blocked publisher gives up after AMQP_BLOCKED_TIMEOUT_S and leaves the event queued.
        registered = stack.run(
            "producer-service",
            "register",
            f"user{number}",
            f"user{number}@example.com",
            AMQP_BLOCKED_TIMEOUT_S="3",
        )
        register_seconds.append(time.monotonic() - started)
        outcomes.append((registered.returncode, registered.stderr))
    simulated = stack.run("producer-service", "simulate", "--count", str(scaled(100, 2000)))
    assert simulated.returncode == 0, simulated.stderr
    assert all(code == 0 for code, _ in outcomes), outcomes
    assert all("queued" in stderr for _, stderr in outcomes), outcomes
    # Nothing got through while the alarm was up.
    assert len(stack.smtp.messages) == 1

    stack.node.rabbitmqctl("set_vm_memory_high_watermark", "0.4")
    cleared = time.monotonic()
    committed = stack.committed_event_ids()
    took = stack.wait_until_delivered(committed)
    stack.settle()

    result = account(committed, stack.emails_by_event())
    record(
        "memory alarm raised then cleared",
        {
            **result.summary(),
            "seconds_alarm_up": round(cleared - alarm_raised, 1),
            "seconds_from_clear_to_all_delivered": round(took, 1),
            "slowest_register_under_alarm_s": round(max(register_seconds), 1),
        },
    )
    assert result.lost == []
    assert result.duplicated == 0
    assert worker.running
