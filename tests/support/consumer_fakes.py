"""In-memory stand-ins for the worker's ports (email_consumer/ports.py), for unit tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from email_consumer.breaker import DeadLetterBreaker
from email_consumer.metrics import WorkerMetrics
from email_consumer.ports import ClaimAnswer, RenderedEmail
from email_consumer.processing import DeliveryProcessor, Handle
from email_consumer.retry_policy import RetryPolicy
from email_consumer.routing import Router


class FakeSender:
    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.failures = list(failures or [])
        self.sent: list[RenderedEmail] = []
        self.lock = threading.Lock()
        self.holding = threading.local()
        self.closed = False

    @contextlib.contextmanager
    def reserved(self) -> Iterator[None]:
        self.holding.value = True
        try:
            yield
        finally:
            self.holding.value = False

    def send(self, email: RenderedEmail) -> None:
        with self.lock:
            if self.failures:
                raise self.failures.pop(0)
            self.sent.append(email)

    def close_all(self) -> None:
        self.closed = True


class FakeProcessedEvents:
    """In memory, with the same atomic claim semantics as the SQL adapter."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[str, tuple[str, str | None, float]] = {}  # status, token, lease_until
        self.forgotten_after: list[float] = []
        self.disposed = False

    def claim(self, event_id: str, token: str, lease_s: float) -> ClaimAnswer:
        with self.lock:
            row = self.rows.get(event_id)
            now = time.monotonic()
            if row is None or (row[0] == "claimed" and row[2] < now):
                self.rows[event_id] = ("claimed", token, now + lease_s)
                return ClaimAnswer.CLAIMED
            if row[0] == "uncertain" and row[2] <= now:
                self.rows[event_id] = ("resending", token, now + lease_s)
                return ClaimAnswer.RESEND
            if row[0] == "uncertain_final" or (row[0] == "resending" and row[2] < now):
                return ClaimAnswer.MAYBE_SENT
            return ClaimAnswer.ALREADY_SENT if row[0] == "sent" else ClaimAnswer.HELD_ELSEWHERE

    def mark_uncertain(self, event_id: str, token: str, resend_after_s: float) -> bool:
        with self.lock:
            status, holder, _ = self.rows[event_id]
            if status == "claimed" and holder == token:
                self.rows[event_id] = ("uncertain", None, time.monotonic() + resend_after_s)
                return False
            if status == "resending" and holder == token:
                self.rows[event_id] = ("uncertain_final", None, 0.0)
            return True

    def release_resend(self, event_id: str, token: str) -> None:
        with self.lock:
            row = self.rows.get(event_id)
            if row is not None and row[0] == "resending" and row[1] == token:
                self.rows[event_id] = ("uncertain", None, 0.0)

    def mark_sent(self, event_id: str, token: str) -> None:
        with self.lock:
            self.rows[event_id] = ("sent", None, 0.0)

    def release(self, event_id: str, token: str) -> None:
        with self.lock:
            row = self.rows.get(event_id)
            if row is not None and row[0] == "claimed" and row[1] == token:
                del self.rows[event_id]

    def forget_older_than(self, age_s: float) -> int:
        self.forgotten_after.append(age_s)
        return 0

    def dispose(self) -> None:
        self.disposed = True


def delivery_processor(
    handle: Handle,
    *,
    metrics: WorkerMetrics | None = None,
    breaker: DeadLetterBreaker | None = None,
    stopping: threading.Event | None = None,
    broker_delays_s: tuple[int, ...] = (5, 30, 300),
) -> DeliveryProcessor:
    """A processor around `handle` with the router and breaker settings the unit tests share."""
    router = Router(
        policy=RetryPolicy(broker_delays_s=broker_delays_s),
        host="worker-1",
        breaker_probe_s=30,
        uncertain_resend_after_s=30,
    )
    return DeliveryProcessor(
        handle=handle,
        router=router,
        breaker=breaker or DeadLetterBreaker(threshold=2, probe_interval_s=30),
        metrics=metrics or WorkerMetrics(),
        stopping=stopping or threading.Event(),
    )
