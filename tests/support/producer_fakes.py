"""In-memory stand-ins for the producer's ports, for unit tests of its pure core.

`FakeOutbox` keeps the real store's rules that the core relies on: claimed rows are skipped
until their lease runs out, marks are written only when a batch's block ends normally, only
under the claim's token, and whatever was not marked is released.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from producer_service.ports import (
    Claim,
    DuplicateUser,
    NewUser,
    OutboxMessage,
    PublishInFlight,
    PublishOutcome,
)


@dataclass
class FakeRow:
    message: OutboxMessage
    published_at: datetime | None = None
    attempts: int = 0
    last_error: str | None = None
    claim_token: str | None = None
    claimed_until: float | None = None


@dataclass
class FakeBatch:
    messages: Sequence[OutboxMessage]
    published: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def mark_published(self, event_ids: Sequence[str]) -> None:
        self.published.extend(event_ids)

    def mark_failed(self, failures: Mapping[str, str]) -> None:
        self.failed.update(failures)


class FakeOutbox:
    def __init__(self, count: int = 0) -> None:
        self.rows = [FakeRow(fake_message(number)) for number in range(1, count + 1)]
        self.deleted_before: list[datetime] = []
        self.mark_writes = 0
        self.sweep_batches: list[int] = []
        """What each batch of a sweep deletes."""
        self.journal: list[str] = []
        """"claim" per claim, "sweep" per sweep batch, in the order they ran."""

    def add(self, message: OutboxMessage, claim: Claim | None = None) -> OutboxMessage:
        """Store an event (claimed, when given a claim) as a registration does."""
        stored = replace(message, id=len(self.rows) + 1)
        row = FakeRow(stored)
        if claim is not None:
            # The fake's "database clock" is this process's wall clock.
            row.claim_token, row.claimed_until = claim.token, time.time() + claim.lease_s
        self.rows.append(row)
        return stored

    @contextmanager
    def claim_pending(
        self, *, after_id: int, limit: int, event_ids: Sequence[str] | None = None
    ) -> Iterator[FakeBatch]:
        self.journal.append("claim")
        now = time.time()
        picked = [
            row
            for row in self.rows
            if row.published_at is None
            and row.message.id > after_id
            and (row.claimed_until is None or row.claimed_until < now)
            and (event_ids is None or row.message.event_id in event_ids)
        ][:limit]
        token = f"relay-{now}"
        for row in picked:
            row.claim_token, row.claimed_until = token, now + 60
        with self.claimed([row.message for row in picked], token) as batch:
            yield batch

    @contextmanager
    def claimed(self, messages: Sequence[OutboxMessage], token: str) -> Iterator[FakeBatch]:
        batch = FakeBatch(messages)
        ours = [
            row
            for row in self.rows
            if row.claim_token == token and row.message.event_id in {m.event_id for m in messages}
        ]
        try:
            yield batch
        except BaseException:
            self._release(ours)
            raise
        if messages:
            self.mark_writes += 1
        for row in ours:
            if row.message.event_id in batch.published:
                row.published_at = datetime.now(UTC)
                row.attempts += 1
            elif row.message.event_id in batch.failed:
                row.attempts += 1
                row.last_error = batch.failed[row.message.event_id]
        self._release(ours)

    @staticmethod
    def _release(rows: Sequence[FakeRow]) -> None:
        for row in rows:
            row.claim_token = row.claimed_until = None

    def sweep_published_before(self, cutoff: datetime, batch_size: int) -> Iterator[int]:
        self.deleted_before.append(cutoff)
        for count in self.sweep_batches:
            self.journal.append("sweep")
            yield count

    def count_published(self, event_ids: Sequence[str]) -> int:
        return sum(1 for row in self.rows if row.published_at and row.message.event_id in event_ids)

    def pending(self) -> list[int]:
        return [row.message.id for row in self.rows if row.published_at is None]

    def claimed_ids(self) -> list[int]:
        return [row.message.id for row in self.rows if row.claim_token is not None]


@dataclass(frozen=True)
class FakeInFlight:
    messages: Sequence[OutboxMessage]
    outcome: PublishOutcome


class FakePublisher:
    def __init__(
        self, *, unroutable: set[int] | None = None, lose_connection_after: int | None = None
    ) -> None:
        self.unroutable = unroutable or set()
        self.lose_connection_after = lose_connection_after
        self.sent: list[int] = []
        self.is_open = True
        self.on_publish: list[threading.Event] = []
        self.calls: list[tuple[str, list[int]]] = []
        """("start" or "finish", the batch's ids), in the order they were called."""

    def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        return self.finish(self.start(messages))

    def start(self, messages: Sequence[OutboxMessage]) -> FakeInFlight:
        """Decides the outcome at once (as if every confirm arrived while writing)."""
        self.calls.append(("start", [message.id for message in messages]))
        return FakeInFlight(messages, self._outcome(messages))

    def finish(self, in_flight: PublishInFlight) -> PublishOutcome:
        assert isinstance(in_flight, FakeInFlight)
        self.calls.append(("finish", [message.id for message in in_flight.messages]))
        return in_flight.outcome

    def _outcome(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        published, failed = set(), {}
        for message in messages:
            if (
                self.lose_connection_after is not None
                and len(self.sent) >= self.lose_connection_after
            ):
                failed[message.event_id] = "connection lost"
                self.is_open = False
                continue
            self.sent.append(message.id)
            if message.id in self.unroutable:
                failed[message.event_id] = "returned by the broker: 312 NO_ROUTE"
            else:
                published.add(message.event_id)
        for event in self.on_publish:
            event.set()
        return PublishOutcome(frozenset(published), failed, connection_lost=not self.is_open)

    def idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def close(self) -> None:
        self.is_open = False


class FakeRegistrationStore:
    def __init__(self, *, duplicate: bool = False) -> None:
        self.duplicate = duplicate
        self.stored: list[tuple[NewUser, OutboxMessage]] = []

    def add_user_with_event(
        self, user: NewUser, message: OutboxMessage, claim: Claim | None = None
    ) -> int:
        if self.duplicate:
            raise DuplicateUser(f"username {user.username!r} is already registered")
        self.stored.append((user, message))
        return len(self.stored)


def fake_message(number: int) -> OutboxMessage:
    return OutboxMessage(
        id=number,
        event_id=f"event-{number}",
        event_type="user_registered",
        routing_key="user.registered",
        body=b"{}",
        correlation_id=f"correlation-{number}",
        created_at=datetime.now(UTC),
    )
