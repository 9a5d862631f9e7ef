"""The outbox relay, the one publisher of outbox events: `relay`, `register` and `simulate` all
publish through it.

Claim, publish, mark: the claim and the marks are short transactions of their own, and no lock is
held while the broker confirms. An event is marked only after the broker confirmed it and did
not return it, so a crash in between publishes it again (the worker deduplicates by `event_id`)
but never loses it; a claim is a lease, taken over once it runs out.

Two batches are on the wire at a time, on one channel (so still in id order): batch k+1 is
claimed and written before batch k's confirms are awaited. If the connection fails, both fail,
and whatever was not confirmed stays pending.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_when_event_set

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
from shared.backoff import Doubling, doubled, log_retry, tenacity_wait
from shared.errors import TransientError
from shared.logging import event_context, get_logger
from shared.tracing import within

PublisherFactory = Callable[[], EventPublisher]

# `relay --once` is a drain for scripts and tests: it gives up after this many connection
# attempts (about 8 s of backoff) instead of waiting for the broker forever.
ONCE_CONNECT_ATTEMPTS: Final = 5
_MAX_RECONNECT_WAIT_S: Final = 30.0
_RECONNECT_JITTER_S: Final = 0.5
_MAX_FAILURE_PAUSE_S: Final = 60.0
_SWEEP_EVERY_S: Final = 60.0
# A sweep batch takes a few milliseconds on SQLite, the most a registration then waits for it.
SWEEP_BATCH_ROWS: Final = 1000
SWEEP_PAUSE_S: Final = 0.02
# Events come in runs: for this many empty passes after one that published (about half a
# second) a polling relay keeps to the first pause, then slows down towards the poll interval.
_FIRST_IDLE_PAUSE_S: Final = 0.005
_QUICK_IDLE_PASSES: Final = 100
_IDLE_SLICE_S: Final = 0.25
_STOP_TIMEOUT_S: Final = 30.0
_log = get_logger(__name__)


@dataclass(slots=True)
class RelayTotals:
    published: int = 0
    failed: int = 0
    deleted: int = 0
    refused: int = 0  # of the failed, those the broker refused with basic.nack


@dataclass(frozen=True, slots=True)
class _OnTheWire:
    """A claimed batch handed to the publisher, its confirms still to come."""

    batch: ClaimedBatch
    in_flight: PublishInFlight

    def settle(self, publisher: EventPublisher) -> PublishOutcome:
        """Wait for the confirms and write the marks; if the wait raises, release the batch."""
        try:
            outcome = publisher.finish(self.in_flight)
        except BaseException:
            self.release()
            raise
        self.batch.mark_published(sorted(outcome.published))
        self.batch.mark_failed(outcome.failed)
        self.batch.write_marks()
        return outcome

    def release(self) -> None:
        """Give the batch up unmarked: the next pass publishes it again."""
        self.batch.release()


class ConnectionLost(TransientError):
    """The broker connection failed in the middle of a batch."""


class OutboxRelay:
    """Publishes the outbox's pending events. With `commits` (an event each registration sets
    after its commit, as `simulate`'s do), the relay publishes as soon as it is set instead of
    polling the outbox every few milliseconds."""

    def __init__(
        self,
        outbox: OutboxStore,
        connect: PublisherFactory,
        settings: RelaySettings,
        *,
        stop: threading.Event | None = None,
        commits: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        self._outbox = outbox
        # Called as the loop goes round (the /livez heartbeat): each pass, batch and wait.
        self._on_progress = on_progress
        self._connect = connect
        self._settings = settings
        self.stop_requested = stop or threading.Event()
        self._commits = commits
        self._clock = clock
        self.totals = RelayTotals()

    def stop(self) -> None:
        """Ask `run_forever` to return after the batches on the wire (thread-safe)."""
        self.stop_requested.set()
        if self._commits is not None:
            self._commits.set()  # ends a pause at once

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
        database_outage = Doubling(0.5, _MAX_RECONNECT_WAIT_S)
        # Events the broker keeps returning would otherwise be retried (and logged) at the
        # polling rate: back off while nothing gets through.
        nothing_gets_through = Doubling(self._settings.poll_interval_s, _MAX_FAILURE_PAUSE_S)
        idle_passes = 0
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
                    this_pass = self._publish_pass(publisher)
                    published, failed = this_pass.published, this_pass.failed
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
                    pause_s = database_outage.failed()
                    _log.warning(
                        "database unavailable; retrying",
                        attempt=database_outage.failures,
                        retry_in_s=pause_s,
                        error=str(error),
                    )
                    self._idle(publisher, pause_s)
                    continue
                database_outage.reset()
                idle_passes = 0 if published or failed else idle_passes + 1
                stuck_pause_s = 0.0
                if failed and not published:
                    stuck_pause_s = nothing_gets_through.failed()
                    if this_pass.refused:
                        self._replace_refusing_channel(publisher, this_pass.refused)
                else:
                    nothing_gets_through.reset()
                if sweeping is not None:
                    # One batch per pass, then a pause for the registrations waiting.
                    self._idle(publisher, SWEEP_PAUSE_S)
                elif stuck_pause_s:
                    # Not cut short by commits: each pass would log every stuck event again.
                    self._idle(publisher, stuck_pause_s, until_a_commit=False)
                elif self._commits is not None:
                    self._idle(publisher, self._settings.poll_interval_s)
                elif not published:
                    self._idle(publisher, idle_pause_s(idle_passes, self._settings.poll_interval_s))
        finally:
            if sweeping is not None:
                sweeping.close()
            if publisher is not None:
                publisher.close()
        return self.totals

    # ---- steps -------------------------------------------------------------------------------

    def publish_pending(
        self, publisher: EventPublisher, event_ids: Sequence[str] | None = None
    ) -> tuple[int, int]:
        """One pass over the pending events (or only those named) in id order; returns
        (published, failed).

        A failed event does not hold back the ones after it: the next pass tries it again.
        """
        totals = self._publish_pass(publisher, event_ids)
        return totals.published, totals.failed

    def _publish_pass(
        self, publisher: EventPublisher, event_ids: Sequence[str] | None = None
    ) -> RelayTotals:
        totals = RelayTotals()
        after_id = 0
        limit = self._settings.batch_size
        on_the_wire: deque[_OnTheWire] = deque()
        lost = False
        try:
            # A publisher that failed while writing (it closed) takes nothing more: the claims
            # would only count a failed attempt against events never sent.
            while not (lost or self.stop_requested.is_set()) and publisher.is_open:
                current = self._claim_and_start(publisher, after_id, limit, event_ids)
                if current is None:
                    break
                on_the_wire.append(current)
                if len(on_the_wire) > 1:
                    lost = self._confirm_and_count(publisher, on_the_wire.popleft(), totals)
                if len(current.batch.messages) < limit:
                    break
                after_id = current.batch.messages[-1].id
            while on_the_wire:
                lost = self._confirm_and_count(publisher, on_the_wire.popleft(), totals) or lost
        except BaseException:
            if on_the_wire:
                # Their confirms and returns may still come, and the next pass publishes these
                # events again: on this connection a late basic.return of one copy could be
                # taken for the other's (returns carry the message id, not the delivery tag).
                with contextlib.suppress(Exception):
                    publisher.close()
            for sent in on_the_wire:
                sent.release()
            raise
        if lost:
            raise ConnectionLost("the broker connection failed during a batch")
        return totals

    def _replace_refusing_channel(self, publisher: EventPublisher, refused: int) -> None:
        """Close a connection on which the broker refused everything the pass sent; the next
        pass, after the pause, publishes on a new one.

        RabbitMQ 3.10 can refuse every publish on a channel for good: one that first published
        to the quorum queue just as its leader's node died kept getting basic.nack for the
        minute it was watched, while a connection opened half a second later to the same node
        had every publish confirmed (measured with plain pika, docs/RELIABILITY.md). A refusal
        for a passing reason costs one reconnect per pause, no more.
        """
        _log.warning(
            "the broker refused every event of the pass; publishing on a new connection",
            refused=refused,
        )
        publisher.close()

    def _claim_and_start(
        self,
        publisher: EventPublisher,
        after_id: int,
        limit: int,
        event_ids: Sequence[str] | None,
    ) -> _OnTheWire | None:
        """Claim the next batch and write it to the broker; None when nothing is pending."""
        batch = self._outbox.claim(after_id=after_id, limit=limit, event_ids=event_ids)
        if not batch.messages:
            return None
        try:
            return _OnTheWire(batch, publisher.start(batch.messages))
        except BaseException:
            batch.release()
            raise

    def _confirm_and_count(
        self, publisher: EventPublisher, sent: _OnTheWire, totals: RelayTotals
    ) -> bool:
        """Settle a batch on the wire and count it; True if the connection failed meanwhile."""
        outcome = sent.settle(publisher)
        self._report(sent.batch.messages, outcome)
        self._on_progress()
        totals.published += len(outcome.published)
        totals.failed += len(outcome.failed)
        totals.refused += len(outcome.refused)
        return outcome.connection_lost

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
            wait=tenacity_wait(0.5, _MAX_RECONNECT_WAIT_S, _RECONNECT_JITTER_S),
            stop=stop,  # type: ignore[arg-type]
            sleep=self._sleep,
            before_sleep=log_retry(_log, "broker unavailable; retrying"),
            reraise=True,
        )
        return retrying(self._connect)

    def _sleep(self, seconds: float) -> None:
        # Wakes at once when a stop is requested, so SIGTERM during a backoff exits promptly.
        self._on_progress()
        self.stop_requested.wait(seconds)

    def _idle(
        self, publisher: EventPublisher, seconds: float, *, until_a_commit: bool = True
    ) -> None:
        """Wait `seconds`, or (`until_a_commit`) until a registration commits. In slices: a
        signal sets `stop_requested` but interrupts no wait; between two slices the
        connection's I/O runs, so the broker's heartbeats are answered."""
        deadline = self._clock() + seconds
        commits = self._commits if until_a_commit else None
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
            if commits is None:
                publisher.idle(min(remaining, _IDLE_SLICE_S))
            elif commits.wait(min(remaining, _IDLE_SLICE_S)):
                commits.clear()  # before the pass: a commit from now on sets it again
                return
            else:
                publisher.idle(0.0)

    def _report(self, messages: Sequence[OutboxMessage], outcome: PublishOutcome) -> None:
        self.totals.published += len(outcome.published)
        self.totals.failed += len(outcome.failed)
        self.totals.refused += len(outcome.refused)
        if outcome.failed:
            for message in messages:
                reason = outcome.failed.get(message.event_id)
                if reason is not None:
                    with (
                        event_context(message.event_id, message.correlation_id),
                        within(message.traceparent),
                    ):
                        _log.error("event not published; it stays in the outbox", reason=reason)
        if outcome.published:
            _log.debug("events published", count=len(outcome.published))


@contextlib.contextmanager
def relaying_meanwhile(relay: OutboxRelay) -> Iterator[OutboxRelay]:
    """`relay.run_forever()` on a thread of its own for the block; stopped when it ends.

    Nothing it leaves is lost: a pass stopped halfway leaves its events pending or claimed
    under a lease, for the next relay.
    """
    thread = threading.Thread(target=_run_logging_failures, args=[relay], name="relay")
    thread.daemon = True
    thread.start()
    try:
        yield relay
    finally:
        relay.stop()
        thread.join(_STOP_TIMEOUT_S)
        if thread.is_alive():
            _log.warning(
                "the relay thread did not stop in time; a relay publishes the rest once "
                "their leases run out",
                timeout_s=_STOP_TIMEOUT_S,
            )


def _run_logging_failures(relay: OutboxRelay) -> None:
    try:
        relay.run_forever()
    except Exception as error:  # noqa: BLE001 - the events are safe in the outbox
        # The type only: the message of an unexpected error could hold a user's data.
        _log.error(
            "the relay thread stopped; events wait for a relay", error_type=type(error).__name__
        )


def idle_pause_s(idle_passes: int, poll_interval_s: float) -> float:
    """How long to wait after `idle_passes` passes in a row found nothing to publish.

    Right after traffic the next event is likely milliseconds away: poll again soon, then slow
    down towards the configured interval while the outbox stays empty.
    """
    return doubled(_FIRST_IDLE_PAUSE_S, idle_passes - _QUICK_IDLE_PASSES, poll_interval_s)
