"""Prometheus metrics of the worker, served with its health probes by `shared.metrics_server`.

The metrics live in their own registry, built by the composition root, so nothing is global and
tests can build as many as they like. The gauges of what the worker is doing now (in flight,
connected, consuming) are read from its `WorkerStatus` at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import prometheus_client as prom

from email_consumer.status import WorkerStatus

OUTCOMES = ("sent", "duplicate", "retried", "delayed", "dead_lettered")
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class WorkerMetrics:
    """Counters and histograms of what the worker did."""

    def __init__(
        self, registry: prom.CollectorRegistry | None = None, status: WorkerStatus | None = None
    ) -> None:
        self.registry = registry or prom.CollectorRegistry()
        self._export_status(status or WorkerStatus())
        self._events = prom.Counter(
            "email_consumer_events",
            "Events by outcome: sent, duplicate (already sent, not sent again), retried (one "
            "more in-process attempt), delayed (parked in a retry queue), dead_lettered.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self._events.labels(outcome)
        self._processing = prom.Histogram(
            "email_consumer_processing_seconds",
            "Time from taking a delivery to settling it.",
            registry=self.registry,
        )
        self._latency = prom.Histogram(
            "email_consumer_end_to_end_latency_seconds",
            "Time from the event's occurred_at to its email being accepted by the mail server.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

        self._uncertain_sends = prom.Counter(
            "email_consumer_uncertain_sends",
            "Sends whose outcome is uncertain: the message and its final dot went out, the "
            "reply never came, so the mail server may have accepted it (resent at most once).",
            registry=self.registry,
        )
        self._breaker_open = prom.Gauge(
            "email_consumer_smtp_breaker_open",
            "1 while the mail server refuses every message (dead-lettering stopped, events "
            "parked in the retry queues and probed), 0 otherwise.",
            registry=self.registry,
        )

    def count_uncertain_send(self) -> None:
        self._uncertain_sends.inc()

    def set_breaker_open(self, is_open: bool) -> None:
        self._breaker_open.set(1 if is_open else 0)

    def count(self, outcome: str, amount: int = 1) -> None:
        if amount > 0:
            self._events.labels(outcome).inc(amount)

    def observe_processing(self, seconds: float) -> None:
        self._processing.observe(seconds)

    def observe_delivered(self, occurred_at: datetime) -> None:
        latency = (datetime.now(UTC) - occurred_at).total_seconds()
        self._latency.observe(max(latency, 0.0))

    def _export_status(self, status: WorkerStatus) -> None:
        for name, documentation, read in (
            (
                "email_consumer_in_flight",
                "Deliveries taken from the broker and not yet settled, on this connection.",
                lambda: status.in_flight,
            ),
            (
                "email_consumer_broker_connected",
                "1 while the worker has a broker connection, 0 otherwise.",
                lambda: status.is_connected,
            ),
            (
                "email_consumer_consuming",
                "1 while the worker consumes its queue (ready), 0 while reconnecting or draining.",
                lambda: status.is_consuming,
            ),
        ):
            gauge = prom.Gauge(name, documentation, registry=self.registry)
            gauge.set_function(_as_float(read))


def _as_float(read: Callable[[], int | bool]) -> Callable[[], float]:
    return lambda: float(read())
