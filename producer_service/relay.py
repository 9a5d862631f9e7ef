"""The outbox relay: publish pending events in id order, mark them published, tidy up.

Publish before mark: an event is marked only after the broker confirmed it and did not return
it, so a crash between the two publishes it again (the worker deduplicates by `event_id`) but
never loses it. Batches keep database round trips and confirm waits to one per batch.

Claim, publish, mark: the claim and the marks are short transactions of their own, and the
confirm wait in between holds no database lock, so registrations never queue behind a broker
that is slow to confirm. A claim is a lease: if this process dies before marking, another
relay publishes the batch again once the lease has run out.

Two batches on the wire: batch k+1 is claimed and handed to the publisher before batch k's
confirms are awaited, on the same channel (so still in id order), and its frames go out while
this process waits for batch k; the broker stores one while this process marks the other.
Confirms are matched to their batch by delivery tag; if the connection fails, both batches
fail, and whatever was not confirmed stays pending.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential,
    wait_random,
)

from producer_service.ports import (
    ClaimedBatch,
    DatabaseUnavailable,
    EventPublisher,
    OutboxMessage,
    OutboxStore,
    PublishInFlight,
    PublishOutcome,
)
from producer_service.settings import RelaySettings
from shared.amqp import BrokerRefused
from shared.errors import TransientError
from shared.logging import event_context, get_logger

PublisherFactory = Callable[[], EventPublisher]

# `relay --once` is a drain for scripts and tests: it gives up after this many connection
# attempts (about 8 s of backoff) instead of waiting for the broker forever.
ONCE_CONNECT_ATTEMPTS: Final = 5
_MAX_RECONNECT_WAIT_S: Final = 30.0
_MAX_FAILURE_PAUSE_S: Final = 60.0
_SWEEP_EVERY_S: Final = 60.0
# A sweep batch takes a few milliseconds on SQLite, the most a registration then waits for it.
SWEEP_BATCH_ROWS: Final = 1000
SWEEP_PAUSE_S: Final = 0.02
# The pause after a pass that found nothing; later doubled per empty pass up to the poll
# interval.
_FIRST_IDLE_PAUSE_S: Final = 0.005
# Events come in runs: for this many empty passes after one that published (about half a
# second) the relay keeps polling at the first pause, then slows down. Doubling from the first
# empty pass had a relay at 50 events/s sleeping 10 to 20 ms between events, which added as
# much to their latency; the quick passes cost one short transaction each.
_QUICK_IDLE_PASSES: Final = 100
_IDLE_SLICE_S: Final = 0.25
_log = get_logger(__name__)


@dataclass(slots=True)
class RelayTotals:
    published: int = 0
    failed: int = 0
    deleted: int = 0


@dataclass(frozen=True, slots=True)
class _OnTheWire:
    """A claimed batch handed to the publisher; leaving `claim` writes its marks (or, on an
    error, releases it)."""

    claim: contextlib.ExitStack
    batch: ClaimedBatch
    in_flight: PublishInFlight


class ConnectionLost(TransientError):
    """The broker connection failed in the middle of a batch."""


class OutboxRelay:
    def __init__(
        self,
        outbox: OutboxStore,
        connect: PublisherFactory,
        settings: RelaySettings,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        self._outbox = outbox
        # Called as the loop goes round (the /livez heartbeat): each pass, batch and wait.
        self._on_progress = on_progress
        self._connect = connect
        self._settings = settings
        self.stop_requested = stop or threading.Event()
        self._clock = clock
        self.totals = RelayTotals()

    # ---- the two ways to run -----------------------------------------------------------------

    def run_once(self) -> RelayTotals:
        """Publish everything pending now (and anything added meanwhile), sweep, and return.

        The sweep needs only the database, so it runs even when the broker cannot be reached.
        """
        try:
            publisher = self._connect_with_backoff(stop_after_attempt(ONCE_CONNECT_ATTEMPTS))
            try:
                self.publish_pending(publisher)
            finally:
                publisher.close()
        finally:
            self.sweep()
        return self.totals

    def run_forever(self) -> RelayTotals:
        """Relay until `stop_requested` is set, reconnecting with backoff when the broker goes."""
        publisher: EventPublisher | None = None
        failed_passes = database_failures = idle_passes = 0
        next_sweep = self._clock()
        sweeping: Generator[int] | None = None
        try:
            while not self.stop_requested.is_set():
                self._on_progress()
                if publisher is None or not publisher.is_open:
                    if publisher is not None:
                        publisher.close()
                    publisher = None
                    try:
                        publisher = self._connect_with_backoff(
                            stop_when_event_set(self.stop_requested)
                        )
                    except TransientError:
                        break  # only reached once a stop was requested
                try:
                    published, failed = self.publish_pending(publisher)
                    if sweeping is None and self._clock() >= next_sweep:
                        sweeping = self._sweep_batches()
                        next_sweep = self._clock() + _SWEEP_EVERY_S
                    if sweeping is not None and next(sweeping, None) is None:
                        sweeping = None
                except ConnectionLost as error:
                    _log.warning("broker connection lost; reconnecting", error=str(error))
                    continue
                except DatabaseUnavailable as error:
                    sweeping = None  # the next sweep starts over
                    database_failures += 1
                    pause_s = doubled(0.5, database_failures, _MAX_RECONNECT_WAIT_S)
                    _log.warning(
                        "database unavailable; retrying",
                        attempt=database_failures,
                        retry_in_s=pause_s,
                        error=str(error),
                    )
                    self._idle(publisher, pause_s)
                    continue
                database_failures = 0
                failed_passes = failed_passes + 1 if failed and not published else 0
                idle_passes = idle_passes + 1 if not (published or failed) else 0
                if sweeping is not None:
                    # One batch per pass, then a pause for the registrations waiting.
                    self._idle(publisher, SWEEP_PAUSE_S)
                elif not published:
                    self._idle(publisher, self._pause_s(failed_passes, idle_passes))
        finally:
            if sweeping is not None:
                sweeping.close()
            if publisher is not None:
                publisher.close()
        return self.totals

    # ---- steps -------------------------------------------------------------------------------

    def publish_pending(self, publisher: EventPublisher) -> tuple[int, int]:
        """One pass over the pending events in id order; returns (published, failed).

        A failed event does not hold back the ones after it: the pass moves on, and the next
        pass tries it again. Two batches are on the wire at a time: the next one is claimed and
        handed over before the previous one's confirms are awaited, so the broker works on one while
        this process marks the other and claims the next.
        """
        totals = RelayTotals()
        after_id = 0
        limit = self._settings.batch_size
        on_the_wire: deque[_OnTheWire] = deque()
        lost = False
        try:
            # A publisher that failed while writing (it closed) takes nothing more: the claims
            # would only count a failed attempt against events never sent.
            while not (lost or self.stop_requested.is_set()) and publisher.is_open:
                current = self._claim_and_start(publisher, after_id, limit)
                if current is None:
                    break
                on_the_wire.append(current)
                if len(on_the_wire) > 1:
                    lost = self._settle(publisher, on_the_wire.popleft(), totals)
                if len(current.batch.messages) < limit:
                    break
                after_id = current.batch.messages[-1].id
            while on_the_wire:
                lost = self._settle(publisher, on_the_wire.popleft(), totals) or lost
        except BaseException as error:
            if on_the_wire:
                # Their confirms and returns may still come, and the next pass publishes these
                # events again: on this connection a late basic.return of one copy could be
                # taken for the other's (returns carry the message id, not the delivery tag).
                # A new connection starts with nothing outstanding.
                with contextlib.suppress(Exception):
                    publisher.close()
            # Nothing may stay claimed by a pass that failed: the next one takes the rows again.
            for sent in on_the_wire:
                sent.claim.__exit__(type(error), error, error.__traceback__)
            raise
        if lost:
            raise ConnectionLost("the broker connection failed during a batch")
        return totals.published, totals.failed

    def _claim_and_start(
        self, publisher: EventPublisher, after_id: int, limit: int
    ) -> _OnTheWire | None:
        """Claim the next batch and write it to the broker; None when nothing is pending."""
        with contextlib.ExitStack() as claim:
            batch = claim.enter_context(self._outbox.claim_pending(after_id=after_id, limit=limit))
            if not batch.messages:
                return None
            # Handed to the publisher inside this block: if that raises, the claim is released.
            in_flight = publisher.start(batch.messages)
            return _OnTheWire(claim.pop_all(), batch, in_flight)

    def _settle(self, publisher: EventPublisher, sent: _OnTheWire, totals: RelayTotals) -> bool:
        """Wait for a batch's confirms and mark it; True if the connection failed meanwhile."""
        with sent.claim:
            outcome = publisher.finish(sent.in_flight)
            sent.batch.mark_published(sorted(outcome.published))
            sent.batch.mark_failed(outcome.failed)
        self._report(sent.batch.messages, outcome)
        self._on_progress()
        totals.published += len(outcome.published)
        totals.failed += len(outcome.failed)
        return outcome.connection_lost

    def publish_events(self, publisher: EventPublisher, event_ids: Sequence[str]) -> frozenset[str]:
        """Publish these events now, if still pending and not held by a relay."""
        with self._outbox.claim_pending(
            after_id=0, limit=len(event_ids), event_ids=event_ids
        ) as batch:
            if not batch.messages:
                return frozenset()
            outcome = publisher.publish(batch.messages)
            batch.mark_published(sorted(outcome.published))
            batch.mark_failed(outcome.failed)
        self._report(batch.messages, outcome)
        return outcome.published

    def sweep(self) -> int:
        """Delete published rows older than the retention period, batch by batch.

        A pause between two batches lets waiting registrations take the write lock (SQLite's
        busy handler polls; a sweep that began its next batch at once would keep winning).
        A stop request ends the sweep after the current batch; the next sweep goes on.
        """
        deleted = 0
        for count in self._sweep_batches():
            deleted += count
            if self.stop_requested.wait(SWEEP_PAUSE_S):
                break
        return deleted

    def _sweep_batches(self) -> Generator[int]:
        # A generator, so that `run_forever` can publish between two batches.
        cutoff = datetime.now(UTC) - timedelta(seconds=self._settings.retention_s)
        deleted = 0
        try:
            for count in self._outbox.sweep_published_before(cutoff, SWEEP_BATCH_ROWS):
                deleted += count
                self.totals.deleted += count
                yield count
        finally:
            if deleted:
                _log.info("published events removed from the outbox", count=deleted)

    # ---- helpers -----------------------------------------------------------------------------

    def _connect_with_backoff(self, stop: object) -> EventPublisher:
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            # Jitter keeps several relays from reconnecting in lock-step after an outage.
            wait=wait_exponential(multiplier=0.5, max=_MAX_RECONNECT_WAIT_S) + wait_random(0, 0.5),
            stop=stop,  # type: ignore[arg-type]
            sleep=self._sleep,
            before_sleep=_log_retry,
            reraise=True,
        )
        return retrying(self._connect)

    def _sleep(self, seconds: float) -> None:
        # Wakes at once when a stop is requested, so SIGTERM during a backoff exits promptly.
        self._on_progress()
        self.stop_requested.wait(seconds)

    def _idle(self, publisher: EventPublisher, seconds: float) -> None:
        # In short slices: a signal sets `stop_requested` but does not interrupt pika's loop.
        deadline = self._clock() + seconds
        while not self.stop_requested.is_set():
            self._on_progress()
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            if not publisher.is_open:
                # Closed by a failed pass (a database outage, say): the pause still holds, and
                # the reconnect waits for it.
                self.stop_requested.wait(remaining)
                return
            publisher.idle(min(remaining, _IDLE_SLICE_S))

    def _pause_s(self, failed_passes: int, idle_passes: int = 1) -> float:
        # Events the broker keeps returning would otherwise be retried (and logged) at the
        # polling rate; back off while nothing gets through.
        if failed_passes:
            return doubled(self._settings.poll_interval_s, failed_passes, _MAX_FAILURE_PAUSE_S)
        return idle_pause_s(idle_passes, self._settings.poll_interval_s)

    def _report(self, messages: Sequence[OutboxMessage], outcome: PublishOutcome) -> None:
        self.totals.published += len(outcome.published)
        self.totals.failed += len(outcome.failed)
        if outcome.failed:
            for message in messages:
                reason = outcome.failed.get(message.event_id)
                if reason is not None:
                    with event_context(message.event_id, message.correlation_id):
                        _log.error("event not published; it stays in the outbox", reason=reason)
        if outcome.published:
            _log.debug("events published", count=len(outcome.published))


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait_s = state.next_action.sleep if state.next_action else 0.0
    # A refused login or vhost will not cure itself: an error, though still retried (an operator
    # may be fixing the broker's users while the relay runs).
    log = _log.error if isinstance(error, BrokerRefused) else _log.warning
    log(
        "broker unavailable; retrying",
        attempt=state.attempt_number,
        retry_in_s=round(wait_s, 2),
        error=str(error),
    )


def idle_pause_s(idle_passes: int, poll_interval_s: float) -> float:
    """How long to wait after `idle_passes` passes in a row found nothing to publish.

    Right after traffic the next event is likely milliseconds away: poll again soon, then slow
    down towards the configured interval while the outbox stays empty. A relay that always
    slept the whole interval would add up to that much to every event's latency.
    """
    return doubled(_FIRST_IDLE_PAUSE_S, max(idle_passes - _QUICK_IDLE_PASSES, 0), poll_interval_s)


def doubled(first_s: float, times: int, cap_s: float) -> float:
    """`first_s` doubled `times` times, at most `cap_s`.

    The exponent is bounded: the counters keep growing while a relay stays idle (a pass every
    second for hours), and a float power of two overflows past 2**1023.
    """
    return min(first_s * 2.0 ** min(times, 64), cap_s)
