"""The ports of the registration service: what the core needs from storage and the broker.

The core (registration, relay, simulation) depends on these protocols only; `storage.py` and
`publisher.py` are the real adapters, wired in `bootstrap.py`, and unit tests pass fakes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
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


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    """Which events the broker confirmed and routed, and why the others were not."""

    published: frozenset[str]
    failed: Mapping[str, str]
    connection_lost: bool = False
    """True when the connection failed during the batch; the publisher must be replaced."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A publisher's hold on the outbox rows stored under it: relays skip them for `lease_s`
    seconds from the insert, by the database's clock, and only marks made under the same
    `token` touch them.

    `until` is the claimant's own deadline on its monotonic clock (`time.monotonic()`), taken
    before the insert: the lease the database records ends no earlier, whatever the claimant's
    wall clock says, so publishing only while `until` lies ahead keeps within the lease.
    """

    token: str
    lease_s: float
    until: float


class RegistrationStore(Protocol):
    def add_user_with_event(
        self, user: NewUser, message: OutboxMessage, claim: Claim | None = None
    ) -> int:
        """Store both in one transaction, returning the outbox id; `DuplicateUser` on conflict.

        With a claim, the event is stored already claimed by its caller, who means to publish
        it at once: no relay races for it, and no second transaction is needed to claim it.
        """


class ClaimedBatch(Protocol):
    messages: Sequence[OutboxMessage]

    def mark_published(self, event_ids: Sequence[str]) -> None: ...

    def mark_failed(self, failures: Mapping[str, str]) -> None: ...


class OutboxStore(Protocol):
    def claim_pending(
        self, *, after_id: int, limit: int, event_ids: Sequence[str] | None = None
    ) -> AbstractContextManager[ClaimedBatch]:
        """Pending events with an id above `after_id`, oldest first, claimed for the block.

        Other relays (and `register`) skip claimed rows, so no two publish the same event while
        its publisher lives; a claim whose publisher died expires after a lease. No lock is held
        inside the block. The marks are written when the block exits without an error.
        """

    def claimed(
        self, messages: Sequence[OutboxMessage], token: str
    ) -> AbstractContextManager[ClaimedBatch]:
        """Events this process claimed under `token` when it stored them, as a claimed batch:
        the marks are written when the block exits, and unmarked events are released."""

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

    def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        """Publish all at once and wait for every confirm; unconfirmed ones count as failed."""

    def start(self, messages: Sequence[OutboxMessage]) -> PublishInFlight:
        """Hand the batch to the connection without waiting; `finish` waits for its confirms."""

    def finish(self, in_flight: PublishInFlight) -> PublishOutcome:
        """Wait for the confirms of a batch from `start`, as `publish` does. Batches started
        later may stay in flight; if the connection fails, they fail with this one."""

    def idle(self, seconds: float) -> None:
        """Wait, keeping the connection alive (heartbeats) meanwhile."""

    def close(self) -> None: ...
