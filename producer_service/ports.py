"""The ports of the registration service: what the core needs from storage and the broker.

The core (registration, relay, simulation) depends on these protocols only; `storage.py` and
`publisher.py` are the real adapters, wired in `bootstrap.py`, and unit tests pass fakes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from shared.errors import ServiceError, TransientError


class DuplicateUser(ServiceError):
    """The username or the email address is already registered (exit code 3)."""


class DatabaseUnavailable(TransientError):
    """The database could not be reached or was busy; trying again later may succeed."""


@dataclass(frozen=True, slots=True)
class NewUser:
    user_id: str
    username: str
    email: str
    full_name: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One event as the relay publishes it; `id` grows in insertion order."""

    event_id: str
    event_type: str
    routing_key: str
    body: bytes
    correlation_id: str
    created_at: datetime
    headers: Mapping[str, Any] = field(default_factory=dict)
    id: int = 0
    # The registration's W3C trace context, when it was traced; the publish continues it.
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    """Which events the broker confirmed and routed, and why the others were not."""

    published: frozenset[str]
    failed: Mapping[str, str]
    connection_lost: bool = False
    """True when the connection failed during the batch; the publisher must be replaced."""
    refused: frozenset[str] = frozenset()
    """Of the failed events, those the broker refused with basic.nack (not returned, not lost
    with the connection)."""


class RegistrationStore(Protocol):
    def add_user_with_event(self, user: NewUser, message: OutboxMessage) -> int:
        """Store both in one transaction, returning the outbox id; `DuplicateUser` on conflict."""


class ClaimedBatch(Protocol):
    """Outbox rows claimed by one publisher: it marks what the broker said of each, then either
    writes the marks (`write_marks`) or gives the whole batch up (`release`)."""

    messages: Sequence[OutboxMessage]

    def mark_published(self, event_ids: Sequence[str]) -> None: ...

    def mark_failed(self, failures: Mapping[str, str]) -> None: ...

    def write_marks(self) -> None:
        """Write the marks in one short transaction and release the rows left unmarked."""

    def release(self) -> None:
        """Release every row unmarked, so the next pass may take it at once. Best effort: a
        database error is swallowed (the lease frees the rows anyway)."""


class OutboxStore(Protocol):
    def claim(
        self, *, after_id: int, limit: int, event_ids: Sequence[str] | None = None
    ) -> ClaimedBatch:
        """Claim pending events with an id above `after_id`, oldest first, in one short
        transaction; no lock is held afterwards.

        Other publishers skip claimed rows, so no two publish the same event while its publisher
        lives; a claim whose publisher died expires after a lease, by the database's clock.
        """

    def sweep_published_before(self, cutoff: datetime, batch_size: int) -> Iterator[int]:
        """Delete events published before `cutoff`, up to `batch_size` per transaction; yields
        each batch's count. No transaction is open while the caller holds an item."""

    def count_published(self, event_ids: Sequence[str]) -> int: ...


class PublishInFlight(Protocol):
    """A batch handed to the connection by `EventPublisher.start`, its confirms still awaited."""

    @property
    def messages(self) -> Sequence[OutboxMessage]: ...


class EventPublisher(Protocol):
    @property
    def is_open(self) -> bool: ...

    def start(self, messages: Sequence[OutboxMessage]) -> PublishInFlight:
        """Hand the batch to the connection without waiting; `finish` waits for its confirms."""

    def finish(self, in_flight: PublishInFlight) -> PublishOutcome:
        """Wait for every confirm of a batch from `start`; unconfirmed ones count as failed.
        Batches started later may stay in flight; if the connection fails, they fail with this
        one."""

    def idle(self, seconds: float) -> None:
        """Wait, keeping the connection alive (heartbeats) meanwhile."""

    def close(self) -> None: ...
