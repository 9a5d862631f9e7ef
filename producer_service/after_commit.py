"""Publishing each event as soon as its registration commits, from a thread of its own.

`register` publishes its one event at once, and the relay is the safety net for whatever that
misses. `simulate` does the same for a stream of registrations: each event is stored already
claimed by this publisher (`claim()`), so no relay races for it and no transaction is spent
claiming it; the registering thread hands it over (`submit`) and goes on, and this thread
publishes it with confirms. Left to the relay's poll, every event would wait for the next pass.

Nothing here can lose an event: it is committed in the outbox before it is handed over, and its
claim is a lease. Marks are written in batches (every `mark_every_s`): a crash before a mark
only means the relay publishes the event again once the lease has run out, and the worker
sends no second email for it. An event whose lease is too close to its end to be published and
marked safely, and every event while the broker cannot be reached, is released to the relay at
once. While the broker is away new events are stored unclaimed, and the thread tries the
broker again every `reconnect_after_s`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Final

from producer_service.ports import (
    Claim,
    DatabaseUnavailable,
    EventPublisher,
    OutboxMessage,
    OutboxStore,
)
from producer_service.relay import PublisherFactory
from shared.errors import TransientError
from shared.logging import event_context, get_logger

DEFAULT_RECONNECT_AFTER_S: Final = 5.0
DEFAULT_MARK_EVERY_S: Final = 0.05
# While no event arrives the thread still runs the connection's I/O now and then, so the
# broker's heartbeats are answered.
_KEEP_ALIVE_EVERY_S: Final = 1.0
# Time an event's lease must still have, beyond one confirm wait, to be published by us.
_LEASE_MARGIN_S: Final = 5.0
_log = get_logger(__name__)


class _Close:
    """Handed over last: publish what came before, write the marks, stop."""


_CLOSE: Final = _Close()
_Handed = tuple[OutboxMessage, Claim] | _Close


class PublishAfterCommit:
    """Use as a context manager around the registrations; leaving it publishes what was handed
    over (within `close_timeout_s`), writes the marks and closes the connection. After `stop`
    is set (SIGTERM), whatever is still queued is released to the relay instead.
    """

    def __init__(
        self,
        outbox: OutboxStore,
        connect: PublisherFactory,
        *,
        lease_s: float,
        confirm_timeout_s: float,
        batch_size: int,
        mark_every_s: float = DEFAULT_MARK_EVERY_S,
        reconnect_after_s: float = DEFAULT_RECONNECT_AFTER_S,
        close_timeout_s: float = 30.0,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._outbox = outbox
        self._connect = connect
        self._lease_s = lease_s
        self._confirm_timeout_s = confirm_timeout_s
        self._batch_size = batch_size
        self._mark_every_s = mark_every_s
        self._reconnect_after_s = reconnect_after_s
        self._close_timeout_s = close_timeout_s
        # Once set (SIGTERM), nothing more is published: what is queued goes to the relay.
        self._stop = stop or threading.Event()
        # Monotonic: the leases themselves run by the database's clock (see `Claim`); this one
        # only tells how much of a lease taken here is left.
        self._clock = clock
        self._token = uuid.uuid4().hex
        self._handed_over: queue.SimpleQueue[_Handed] = queue.SimpleQueue()
        self._publisher: EventPublisher | None = None
        # Read by the registering thread (`claim`): a plain flag, set only by this thread, true
        # while events cannot be published here (broker away, or this thread stopped).
        self._paused = False
        self._next_connect_at = 0.0
        self._settled: list[OutboxMessage] = []
        self._published: list[str] = []
        self._failed: dict[str, str] = {}
        self._marks_due_at: float | None = None
        self._in_hand: list[OutboxMessage] = []
        self._thread = threading.Thread(target=self._run, name="publish-after-commit", daemon=True)
        self.published = 0
        """Events this thread saw confirmed and marked."""

    def __enter__(self) -> PublishAfterCommit:
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _error: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._handed_over.put(_CLOSE)
        self._thread.join(self._close_timeout_s)
        if not self._thread.is_alive():
            # Anything handed over after the thread stopped (it failed, or saw the stop first)
            # goes to the relay now rather than after its lease.
            self._finish()
        else:
            _log.warning(
                "publishing at commit did not finish in time; the relay publishes the rest "
                "once their leases run out",
                timeout_s=self._close_timeout_s,
            )

    # ---- called by the registering thread ---------------------------------------------------

    def claim(self) -> Claim | None:
        """The claim to store the next event under, or None while events cannot be published
        here (the event is then stored unclaimed, for the relay)."""
        if self._paused:
            return None
        return Claim(self._token, self._lease_s, self._clock() + self._lease_s)

    def submit(self, message: OutboxMessage, claim: Claim) -> None:
        """Publish this committed event, stored under `claim`, soon; never blocks or raises."""
        self._handed_over.put((message, claim))

    # ---- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except Exception as error:  # noqa: BLE001 - the events are safe in the outbox
            self._paused = True  # from now on every event is stored for the relay
            # The type only: the message of an unexpected error could hold a user's data.
            _log.error("publishing at commit stopped", error_type=type(error).__name__)
        finally:
            self._finish()

    def _serve(self) -> None:
        closing = False
        while not closing and not self._stop.is_set():
            batch, closing = self._next_batch()
            if batch:
                self._in_hand = [message for message, _claim in batch]
                self._publish(batch)
                self._in_hand = []
            elif self._publisher is not None and self._publisher.is_open:
                self._publisher.idle(0.0)  # heartbeats
            elif self._paused and self._clock() >= self._next_connect_at:
                # Nothing is handed over while paused: try the broker again on our own.
                self._open_publisher()
            if len(self._settled) >= self._batch_size or self._marks_due():
                self._write_marks()

    def _finish(self) -> None:
        """Write the marks owed, and hand what is still queued to the relay (after a stop or a
        failure), each as best it can: the leases cover whatever this cannot do."""
        with contextlib.suppress(Exception):
            self._write_marks()
        # A batch in hand when something failed is released too: rows already marked are no
        # longer claimed under our token, so releasing them again changes nothing.
        left = self._in_hand
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._handed_over.get_nowait()
                if not isinstance(item, _Close):
                    left.append(item[0])
        with contextlib.suppress(Exception):
            self._release(left)
        if self._publisher is not None:
            self._publisher.close()

    def _next_batch(self) -> tuple[list[tuple[OutboxMessage, Claim]], bool]:
        """What was handed over (at most a batch), after waiting a while for the first."""
        wake_at = self._clock() + _KEEP_ALIVE_EVERY_S
        if self._marks_due_at is not None:
            wake_at = min(wake_at, self._marks_due_at)
        if self._paused:
            wake_at = min(wake_at, self._next_connect_at)
        wait_s = max(0.0, wake_at - self._clock())
        try:
            item = self._handed_over.get(timeout=wait_s)
        except queue.Empty:
            return [], False
        batch: list[tuple[OutboxMessage, Claim]] = []
        while True:
            if isinstance(item, _Close):
                return batch, True
            batch.append(item)
            if len(batch) >= self._batch_size:
                return batch, False
            try:
                item = self._handed_over.get_nowait()
            except queue.Empty:
                return batch, False

    def _publish(self, batch: Sequence[tuple[OutboxMessage, Claim]]) -> None:
        publisher = self._open_publisher()
        if publisher is None:
            self._release([message for message, _claim in batch])
            return
        # Publish and mark within the lease, or not at all: an event whose lease could run out
        # before its mark is written might meanwhile be published by a relay too. Checked after
        # connecting (which can take seconds), just before publishing.
        fresh = list(batch)
        while True:  # releasing can wait for a lock, so look again after each release
            latest_start = self._clock() + self._confirm_timeout_s + _LEASE_MARGIN_S
            late = [message for message, claim in fresh if claim.until <= latest_start]
            if not late:
                break
            self._release(late)
            fresh = [(message, claim) for message, claim in fresh if claim.until > latest_start]
        messages = [message for message, _claim in fresh]
        if not messages:
            return
        outcome = publisher.publish(messages)
        if not publisher.is_open:
            self._lose_publisher()
        self._settled.extend(messages)
        self._published.extend(outcome.published)
        self._failed.update(outcome.failed)
        if self._marks_due_at is None:
            self._marks_due_at = self._clock() + self._mark_every_s
        for message in messages:
            reason = outcome.failed.get(message.event_id)
            if reason is not None:
                with event_context(message.event_id, message.correlation_id):
                    _log.warning("event not published at commit; left to the relay", reason=reason)

    def _marks_due(self) -> bool:
        return self._marks_due_at is not None and self._clock() >= self._marks_due_at

    def _write_marks(self) -> None:
        if not self._settled:
            return
        try:
            with self._outbox.claimed(self._settled, self._token) as batch:
                batch.mark_published(self._published)
                batch.mark_failed(self._failed)
        except DatabaseUnavailable as error:
            # Kept for the next try; if none succeeds, the relay publishes these events again
            # once their leases run out.
            _log.warning("marks not written yet", count=len(self._settled), reason=str(error))
            self._marks_due_at = self._clock() + self._mark_every_s
            return
        self.published += len(self._published)
        self._settled, self._published, self._failed = [], [], {}
        self._marks_due_at = None

    def _release(self, messages: Sequence[OutboxMessage]) -> None:
        """Hand these events to the relay now instead of when their leases run out."""
        if not messages:
            return
        try:
            with self._outbox.claimed(messages, self._token):
                pass  # nothing marked: every row is released
        except DatabaseUnavailable as error:
            _log.warning(
                "events left to the relay after their leases",
                count=len(messages),
                reason=str(error),
            )

    def _lose_publisher(self) -> None:
        assert self._publisher is not None
        self._publisher.close()
        self._publisher = None
        self._paused = True
        self._next_connect_at = self._clock() + self._reconnect_after_s

    def _open_publisher(self) -> EventPublisher | None:
        if self._publisher is not None:
            if self._publisher.is_open:
                return self._publisher
            self._lose_publisher()  # closed while idle (a heartbeat timeout, say)
        if self._clock() < self._next_connect_at:
            return None
        try:
            self._publisher = self._connect()
        except TransientError as error:
            self._paused = True
            self._next_connect_at = self._clock() + self._reconnect_after_s
            _log.warning(
                "cannot publish at commit; the relay publishes meanwhile",
                retry_in_s=self._reconnect_after_s,
                error=str(error),
            )
            return None
        self._paused = False
        return self._publisher
