"""The worker SIGKILLed mid-processing, several times, and started again."""

from __future__ import annotations

import pytest

from email_consumer.worker import THREADS_PER_CONNECTION
from tests.faults.harness import TEST_TIMEOUT_S, Stack, account, record, scaled

pytestmark = [pytest.mark.private_node, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT_S)]

CONCURRENCY = 4
WORKER_ENV = {
    "WORKER_CONCURRENCY": str(CONCURRENCY),
    # A crashed worker's claims stay taken for WORKER_CLAIM_LEASE_S (12 s here); redeliveries
    # meanwhile are retried, so the retries must last longer than that before the DLQ.
    "RETRY_DELAYS_S": "1,2,4,8",
}


def test_worker_killed_mid_processing_loses_nothing(stack: Stack) -> None:
    count = scaled(400, 3000)
    kills = scaled(3, 10)
    # A remote mail server takes a while per message, so every kill lands with emails in
    # flight: claimed, being sent, sent but not yet recorded.
    stack.smtp.set_latency(0.05)
    assert stack.run("producer-service", "simulate", "--count", str(count)).returncode == 0
    committed = stack.committed_event_ids()
    stack.start_relay()
    worker = stack.start_worker(**WORKER_ENV)

    step = count // (kills + 1)
    for kill in range(1, kills + 1):

        def progressed(target: int = kill * step) -> bool:
            return len(stack.smtp.messages) >= target

        stack.wait_for(progressed, 120, f"{kill * step} emails before kill {kill}")
        worker.kill()
        worker = stack.start_worker(**WORKER_ENV)

    took = stack.wait_until_delivered(committed)
    stack.settle()
    result = account(committed, stack.emails_by_event())
    record(
        "worker SIGKILLed mid-processing",
        {**result.summary(), "kills": kills, "seconds_to_drain_after_last_kill": round(took, 1)},
    )
    assert result.lost == []
    assert result.unexpected == []
    # A duplicate is possible only for an email the server accepted just before the kill and
    # that the worker had not yet recorded: at most one per thread per kill (the worker runs
    # THREADS_PER_CONNECTION threads per SMTP connection).
    assert result.extra_emails <= kills * CONCURRENCY * THREADS_PER_CONNECTION
    assert worker.terminate() == 0
