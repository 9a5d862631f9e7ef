"""In-memory stand-ins for the producer's ports, for unit tests of its pure core.

`FakeOutbox` keeps the real store's rules that the core relies on: claimed rows are skipped
until their lease runs out, marks are written only by `write_marks`, only under the claim's
token, and whatever was not marked is released. It stores registrations too, as the database
holds both tables.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from producer_service.ports import (
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
    outbox: FakeOutbox
    token: str
    messages: Sequence[OutboxMessage]
    published: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def mark_published(self, event_ids: Sequence[str]) -> None:
        self.published.extend(event_ids)

    def mark_failed(self, failures: Mapping[str, str]) -> None:
        self.failed.update(failures)

    def write_marks(self) -> None:
        self.outbox.write_marks(self)

    def release(self) -> None:
        self.outbox.release(self)


class FakeOutbox:
    def __init__(self, count: int = 0) -> None:
        self.rows = [FakeRow(fake_message(number)) for number in range(1, count + 1)]
        self.users: list[NewUser] = []
        self._tokens = itertools.count(1)
        self.deleted_before: list[datetime] = []
        self.mark_writes = 0
        self.sweep_batches: list[int] = []
        """What each batch of a sweep deletes."""
        self.journal: list[str] = []
        """"claim" per claim, "sweep" per sweep batch, in the order they ran."""

    def add_user_with_event(self, user: NewUser, message: OutboxMessage) -> int:
        self.users.append(user)
        self.rows.append(FakeRow(replace(message, id=len(self.rows) + 1)))
        return len(self.rows)

    def claim(
        self, *, after_id: int, limit: int, event_ids: Sequence[str] | None = None
    ) -> FakeBatch:
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
        token = f"relay-{next(self._tokens)}"
        for row in picked:
            row.claim_token, row.claimed_until = token, now + 60
        return FakeBatch(self, token, [row.message for row in picked])

    def write_marks(self, batch: FakeBatch) -> None:
        if batch.messages:
            self.mark_writes += 1
        for row in self._claimed_by(batch):
            if row.message.event_id in batch.published:
                row.published_at = datetime.now(UTC)
                row.attempts += 1
            elif row.message.event_id in batch.failed:
                row.attempts += 1
                row.last_error = batch.failed[row.message.event_id]
        self.release(batch)

    def release(self, batch: FakeBatch) -> None:
        for row in self._claimed_by(batch):
            row.claim_token = row.claimed_until = None

    def _claimed_by(self, batch: FakeBatch) -> list[FakeRow]:
        ids = {message.event_id for message in batch.messages}
        return [
            row
            for row in self.rows
            if row.claim_token == batch.token and row.message.event_id in ids
        ]

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
        self,
        *,
        unroutable: set[int] | None = None,
        refuse_all: bool = False,
        lose_connection_after: int | None = None,
    ) -> None:
        self.unroutable = unroutable or set()
        self.refuse_all = refuse_all
        """Every event is nacked, as on a RabbitMQ 3.10 channel stuck refusing."""
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
        published, failed, refused = set(), {}, set()
        for message in messages:
            if (
                self.lose_connection_after is not None
                and len(self.sent) >= self.lose_connection_after
            ):
                failed[message.event_id] = "connection lost"
                self.is_open = False
                continue
            self.sent.append(message.id)
            if self.refuse_all:
                failed[message.event_id] = "refused by the broker (basic.nack)"
                refused.add(message.event_id)
            elif message.id in self.unroutable:
                failed[message.event_id] = "returned by the broker: 312 NO_ROUTE"
            else:
                published.add(message.event_id)
        for event in self.on_publish:
            event.set()
        return PublishOutcome(
            frozenset(published),
            failed,
            connection_lost=not self.is_open,
            refused=frozenset(refused),
        )

    def idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def close(self) -> None:
        self.is_open = False


class FakeRegistrationStore:
    def __init__(self, *, duplicate: bool = False) -> None:
        self.duplicate = duplicate
        self.stored: list[tuple[NewUser, OutboxMessage]] = []

    def add_user_with_event(self, user: NewUser, message: OutboxMessage) -> int:
        if self.duplicate:
            raise DuplicateUser(f"username {user.username!r} is already registered")
        self.stored.append((user, message))
        return len(self.stored)

    @property
    def messages(self) -> list[OutboxMessage]:
        return [message for _, message in self.stored]


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
