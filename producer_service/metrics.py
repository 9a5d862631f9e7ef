"""Prometheus metrics of the outbox relay, served with its health probes by
`shared.metrics_server`.

The counters and the confirm latency come from the publishers the relay connects: each one is
wrapped (`metered`), so every batch is counted by what the broker said about it (confirmed and
routed, returned as unroutable, or failed: nacked, unconfirmed in time, connection lost), and
timed from the moment it was handed to the connection to its last confirm. The outbox gauges
are read from the database at scrape time (`outbox_backlog`). Nothing is global: each relay
builds its own registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import prometheus_client as prom
import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from producer_service.outbox_backlog import OutboxBacklog
from producer_service.ports import EventPublisher, OutboxMessage, PublishInFlight, PublishOutcome
from shared.logging import get_logger

OUTCOMES: Final = ("published", "returned", "failed")
# How ConfirmingPublisher words a basic.return (the reason it stores for the event).
_RETURNED_PREFIX: Final = "returned by the broker"
_CONFIRM_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_log = get_logger(__name__)
PublisherFactory = Callable[[], EventPublisher]


class RelayMetrics:
    def __init__(self, registry: prom.CollectorRegistry | None = None) -> None:
        self.registry = registry or prom.CollectorRegistry()
        self._events = prom.Counter(
            "producer_relay_events",
            "Events the relay handed to the broker, by what the broker said: published "
            "(confirmed and routed), returned (unroutable), failed (nacked, not confirmed in "
            "time, connection lost). Returned and failed events stay pending and are tried again.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self._events.labels(outcome)
        self._confirm_seconds = prom.Histogram(
            "producer_relay_confirm_seconds",
            "Time from handing a batch to the broker connection to its last confirm.",
            buckets=_CONFIRM_BUCKETS,
            registry=self.registry,
        )
        self._latest: EventPublisher | None = None
        prom.Gauge(
            "producer_relay_broker_connected",
            "1 while the relay's broker connection is open, 0 otherwise.",
            registry=self.registry,
        ).set_function(lambda: float(self.broker_connected))

    @property
    def broker_connected(self) -> bool:
        latest = self._latest
        return latest is not None and latest.is_open

    def metered(self, connect: PublisherFactory) -> PublisherFactory:
        """`connect`, with each publisher it makes counted, timed and watched."""

        def connect_metered() -> EventPublisher:
            publisher = _MeteredPublisher(connect(), self)
            self._latest = publisher
            return publisher

        return connect_metered

    def watch_outbox(self, backlog: Callable[[], OutboxBacklog]) -> None:
        self.registry.register(_OutboxCollector(backlog))

    def record(self, outcome: PublishOutcome, seconds: float) -> None:
        returned = sum(1 for reason in outcome.failed.values() if _is_return(reason))
        self._events.labels("published").inc(len(outcome.published))
        self._events.labels("returned").inc(returned)
        self._events.labels("failed").inc(len(outcome.failed) - returned)
        self._confirm_seconds.observe(seconds)


def _is_return(reason: str) -> bool:
    return reason.startswith(_RETURNED_PREFIX)


@dataclass(frozen=True, slots=True)
class _Timed:
    """A batch in flight and when it was handed over; what `_MeteredPublisher.start` returns."""

    inner: PublishInFlight
    started: float

    @property
    def messages(self) -> Sequence[OutboxMessage]:
        return self.inner.messages


class _MeteredPublisher:
    """An `EventPublisher` that reports each finished batch to `RelayMetrics`."""

    def __init__(self, inner: EventPublisher, metrics: RelayMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    @property
    def is_open(self) -> bool:
        return self._inner.is_open

    def start(self, messages: Sequence[OutboxMessage]) -> PublishInFlight:
        return _Timed(self._inner.start(messages), _now())

    def finish(self, in_flight: PublishInFlight) -> PublishOutcome:
        assert isinstance(in_flight, _Timed), "finish() takes what this publisher's start() made"
        outcome = self._inner.finish(in_flight.inner)
        self._metrics.record(outcome, _now() - in_flight.started)
        return outcome

    def idle(self, seconds: float) -> None:
        self._inner.idle(seconds)

    def close(self) -> None:
        self._inner.close()


class _OutboxCollector(Collector):
    """The outbox gauges, read when Prometheus scrapes; none when the database does not answer
    (the relay's /readyz says so, and a missing series is not a zero)."""

    def __init__(self, backlog: Callable[[], OutboxBacklog]) -> None:
        self._backlog = backlog

    def describe(self) -> Iterable[prom.Metric]:
        # Without it, registering would call `collect`, and so query the database.
        return _families(None)

    def collect(self) -> Iterable[prom.Metric]:
        try:
            backlog = self._backlog()
        except sa.exc.SQLAlchemyError as error:
            _log.warning("outbox metrics unavailable", error_type=type(error).__name__)
            return []
        return _families(backlog)


def _families(backlog: OutboxBacklog | None) -> list[prom.Metric]:
    """The outbox's metric families, with `backlog`'s values (none: names only)."""
    pending = GaugeMetricFamily(
        "producer_outbox_pending_events",
        "Events stored and not yet published (claimed ones included).",
    )
    age = GaugeMetricFamily(
        "producer_outbox_oldest_pending_age_seconds",
        "Age of the oldest event not yet published; 0 when none is pending.",
    )
    stored = CounterMetricFamily(
        "producer_outbox_events_stored",
        "Events ever stored in the outbox (its highest id): one per registration.",
    )
    if backlog is not None:
        pending.add_metric([], backlog.pending)
        age.add_metric([], backlog.oldest_pending_age_s)
        stored.add_metric([], backlog.highest_id)
    return [pending, age, stored]


def _now() -> float:
    return time.monotonic()
