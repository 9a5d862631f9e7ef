"""SQLAlchemy Core adapters for the registration store and the outbox (SQLite or PostgreSQL)."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from producer_service.ports import (
    DatabaseUnavailable,
    DuplicateUser,
    NewUser,
    OutboxMessage,
)
from producer_service.schema import outbox, users
from producer_service.validation import email_key, username_key
from shared.database import (
    checkpoint_quietly,
    db_now,
    is_sqlite,
    reason_of,
    relax_commit_for_housekeeping,
)

# Well under every database's limit on bound parameters in one statement.
_IN_LIST_SIZE: Final = 1000
_MAX_ERROR_CHARS: Final = 500
_NO_CLAIM: Final = {"claim_token": None, "claimed_until": None}
_T = TypeVar("_T")


class SqlRegistrationStore:
    """Stores a user and its event in one transaction."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add_user_with_event(self, user: NewUser, message: OutboxMessage) -> int:
        # The unique constraints decide, races included; only then does a look-up find out
        # which of the two keys was taken, to name it in the message.
        try:
            with self._engine.begin() as connection:
                # Parameters passed apart from the statement keep its compiled form cached.
                connection.execute(_INSERT_USER, _user_row(user))
                outbox_id = connection.execute(_INSERT_EVENT, _outbox_row(message)).scalar_one()
                return int(outbox_id)
        except sa.exc.IntegrityError:
            self._raise_if_taken(user)
            raise

    def _raise_if_taken(self, user: NewUser) -> None:
        with self._engine.connect() as connection:
            taken = connection.execute(
                sa.select(users.c.username, users.c.email, users.c.username_key).where(
                    sa.or_(
                        users.c.username_key == username_key(user.username),
                        users.c.email_key == email_key(user.email),
                    )
                )
            ).all()
        for row in taken:
            if row.username_key == username_key(user.username):
                raise DuplicateUser(f"username {user.username!r} is already registered")
        if taken:
            raise DuplicateUser(f"email {user.email!r} is already registered")


class _SqlClaimedBatch:
    """Rows claimed under one token; marks are buffered and written in one short transaction."""

    def __init__(self, engine: Engine, messages: Sequence[OutboxMessage], token: str) -> None:
        self.messages = messages
        self._engine = engine
        self._token = token
        self._ids = {message.event_id: message.id for message in messages}
        self._published: list[int] = []
        self._failed: dict[int, str] = {}

    def mark_published(self, event_ids: Sequence[str]) -> None:
        self._published.extend(self._ids[event_id] for event_id in event_ids)

    def mark_failed(self, failures: Mapping[str, str]) -> None:
        for event_id, reason in failures.items():
            self._failed[self._ids[event_id]] = reason[:_MAX_ERROR_CHARS]

    def write_marks(self) -> None:
        if self.messages:
            _in_transaction(self._engine, self._write)

    def release(self) -> None:
        # Failing to release must not hide the error that brought the caller here.
        if self.messages:
            with suppress(sa.exc.SQLAlchemyError), self._engine.begin() as connection:
                self._release(connection, list(self._ids.values()))

    def _write(self, connection: Connection) -> None:
        # Each statement touches only rows still claimed under our token: if our lease ran out
        # and another publisher took a row over, its claim and its marks are left alone.
        now = datetime.now(UTC)
        for ids in _slices(self._published):
            connection.execute(
                _MARK_PUBLISHED, {"row_ids": ids, "token": self._token, "published": now}
            )
        if self._failed:
            connection.execute(
                _MARK_FAILED,
                [
                    {"row_id": row_id, "token": self._token, "error": error}
                    for row_id, error in self._failed.items()
                ],
            )
        marked = {*self._published, *self._failed}
        self._release(connection, [row_id for row_id in self._ids.values() if row_id not in marked])

    def _release(self, connection: Connection, ids: Sequence[int]) -> None:
        for chunk in _slices(ids):
            connection.execute(_RELEASE, {"row_ids": chunk, "token": self._token})


def relax_commits(engine: Engine) -> Engine:
    """Let `engine`'s commits return before they reach the disk; for the outbox's claims and
    marks only, whose loss a power cut can afford.

    A claim lost leaves its rows pending, as before it; a mark lost publishes its event again,
    a duplicate the worker absorbs. What must outlive a power cut, the registration itself,
    commits through another engine: on SQLite its FULL commit syncs the whole WAL, these
    frames included. Without this, a relay pass per event (claim, mark) would add two disk
    syncs to each registration's one, all taking turns for SQLite's write lock.
    """
    sqlite = is_sqlite(engine)

    @sa.event.listens_for(engine, "connect")
    def _relax(dbapi_connection: Any, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        if sqlite:
            cursor.execute("PRAGMA synchronous=NORMAL")
        else:
            cursor.execute("SET synchronous_commit = off")
            dbapi_connection.commit()  # a session setting, kept by the pooled connection
        cursor.close()

    return engine


class SqlOutboxStore:
    """The relay's view of the outbox table.

    A batch is claimed in one short transaction (a token and a lease written on its rows), then
    published with no transaction open, then marked in another short one. Nothing holds a lock
    while the broker confirms, so on SQLite, whose single write lock every transaction takes
    (BEGIN IMMEDIATE), registrations never wait for a confirm.
    """

    def __init__(self, engine: Engine, *, lease_s: float) -> None:
        self._engine = engine
        self._sqlite = is_sqlite(engine)
        # Leases run by the database's clock (`db_now`): they are compared across processes,
        # and on PostgreSQL across hosts, whose own clocks may disagree.
        self._lease_s = lease_s
        skip_locked = not self._sqlite
        self._claim_next = _claim_statement(by_event_id=False, skip_locked=skip_locked)
        self._claim_named = _claim_statement(by_event_id=True, skip_locked=skip_locked)

    def claim(
        self, *, after_id: int, limit: int, event_ids: Sequence[str] | None = None
    ) -> _SqlClaimedBatch:
        token = uuid.uuid4().hex
        messages = _in_transaction(
            self._engine,
            lambda connection: self._claim(connection, token, after_id, limit, event_ids),
        )
        return _SqlClaimedBatch(self._engine, messages, token)

    @contextmanager
    def claim_pending(
        self, *, after_id: int, limit: int, event_ids: Sequence[str] | None = None
    ) -> Iterator[_SqlClaimedBatch]:
        """`claim` as a block: its marks are written when it ends, everything is released if
        it raises."""
        batch = self.claim(after_id=after_id, limit=limit, event_ids=event_ids)
        try:
            yield batch
        except BaseException:
            batch.release()
            raise
        batch.write_marks()

    def _claim(
        self,
        connection: Connection,
        token: str,
        after_id: int,
        limit: int,
        event_ids: Sequence[str] | None,
    ) -> list[OutboxMessage]:
        parameters: dict[str, Any] = {
            "after_id": after_id,
            "limit": limit,
            "token": token,
            "lease_s": self._lease_s,
        }
        if event_ids is None:
            claim = self._claim_next
        else:
            claim = self._claim_named
            parameters["event_ids"] = list(event_ids)
        # RETURNING keeps no order; the relay publishes in id order.
        return sorted((_message(row) for row in connection.execute(claim, parameters)), key=_by_id)

    def sweep_published_before(self, cutoff: datetime, batch_size: int) -> Iterator[int]:
        """Delete rows published before `cutoff`, `batch_size` at a time; yields each count.

        Each batch is one short transaction, and none is open while the caller holds an item:
        on SQLite the write lock is free between two batches, so a registration waits for one
        batch at most, never for the whole sweep. Each batch is a range scan of the index on
        published_at from the time the last one ended at: it never steps over the entries its
        predecessors deleted (PostgreSQL keeps them until a vacuum), nor over recent rows.
        """
        resume: dict[str, Any] | None = None
        while True:
            deleted, resume = _in_transaction(
                self._engine,
                functools.partial(
                    _delete_published_batch, cutoff=cutoff, resume=resume, limit=batch_size
                ),
            )
            if self._sqlite and deleted:
                checkpoint_quietly(self._engine)
            if deleted or resume is not None:
                yield deleted
            if resume is None:
                return

    def count_published(self, event_ids: Sequence[str]) -> int:
        total = 0
        with self._engine.connect() as connection:
            for ids in _slices(event_ids):
                total += connection.execute(
                    sa.select(sa.func.count())
                    .select_from(outbox)
                    .where(outbox.c.event_id.in_(ids), outbox.c.published_at.is_not(None))
                ).scalar_one()
        return total


# ---- statements ------------------------------------------------------------------------------
# Built once, every value a bound parameter: SQLAlchemy then builds and caches each only once.

_INSERT_USER: Final = users.insert()
_INSERT_EVENT: Final = outbox.insert().returning(outbox.c.id)
_CLAIMED_BY_US: Final = outbox.c.claim_token == sa.bindparam("token")
_ROW_IDS: Final = outbox.c.id.in_(sa.bindparam("row_ids", expanding=True))
_MARK_PUBLISHED: Final = (
    outbox.update()
    .where(_ROW_IDS, _CLAIMED_BY_US)
    .values(
        published_at=sa.bindparam("published"),
        attempts=outbox.c.attempts + 1,
        last_error=None,
        **_NO_CLAIM,
    )
)
_MARK_FAILED: Final = (
    outbox.update()
    .where(outbox.c.id == sa.bindparam("row_id"), _CLAIMED_BY_US)
    .values(attempts=outbox.c.attempts + 1, last_error=sa.bindparam("error"), **_NO_CLAIM)
)
_RELEASE: Final = outbox.update().where(_ROW_IDS, _CLAIMED_BY_US).values(**_NO_CLAIM)


_SWEEP_FIRST: Final = (
    sa.select(outbox.c.published_at, outbox.c.id)
    .where(outbox.c.published_at < sa.bindparam("cutoff"))
    .order_by(outbox.c.published_at)
    .limit(sa.bindparam("limit"))
)
# From the last batch's latest time on, that time included: a relay marks a whole batch with
# one timestamp, and rows of it the last batch left are still there (those it took are gone).
_SWEEP_NEXT: Final = _SWEEP_FIRST.where(outbox.c.published_at >= sa.bindparam("after_at"))
# The cutoff again: nothing but a published row older than it may go, whatever happened to
# the ids since they were read.
_SWEEP_DELETE: Final = outbox.delete().where(
    _ROW_IDS, outbox.c.published_at < sa.bindparam("cutoff")
)


def _delete_published_batch(
    connection: Connection, cutoff: datetime, resume: dict[str, Any] | None, limit: int
) -> tuple[int, dict[str, Any] | None]:
    """Delete up to `limit` rows in index order from `resume`; returns (deleted, next resume).

    The next resume is None once a batch came up short: nothing eligible is left after it.
    """
    relax_commit_for_housekeeping(connection)
    parameters: dict[str, Any] = {"cutoff": cutoff, "limit": limit}
    if resume is None:
        keys = connection.execute(_SWEEP_FIRST, parameters).all()
    else:
        keys = connection.execute(_SWEEP_NEXT, {**parameters, **resume}).all()
    if not keys:
        return 0, None
    ids = [row_id for _, row_id in keys]
    deleted = connection.execute(_SWEEP_DELETE, {"row_ids": ids, "cutoff": cutoff}).rowcount
    following = {"after_at": keys[-1][0]} if len(keys) == limit else None
    return int(deleted), following


def _claim_statement(*, by_event_id: bool, skip_locked: bool) -> sa.Update:
    """Pick, claim and return up to `limit` pending rows after `after_id`, in one statement.

    RETURNING needs SQLite 3.35+ (any PostgreSQL). The pick is a CTE, not a subquery:
    PostgreSQL may run a locking subquery once per row it joins (claiming more than `limit`
    rows), but evaluates a FOR UPDATE CTE exactly once.
    """
    pending = (
        sa.select(outbox.c.id)
        .where(
            outbox.c.published_at.is_(None),
            outbox.c.id > sa.bindparam("after_id"),
            sa.or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < db_now()),
        )
        .order_by(outbox.c.id)
        .limit(sa.bindparam("limit"))
    )
    if by_event_id:
        pending = pending.where(outbox.c.event_id.in_(sa.bindparam("event_ids", expanding=True)))
    if skip_locked:
        # Two relays claiming at once: each skips the rows the other is claiming, instead of
        # waiting for them and then finding them claimed. SQLite's BEGIN IMMEDIATE already
        # runs claims one at a time.
        pending = pending.with_for_update(skip_locked=True)
    picked = pending.cte("picked")
    return (
        outbox.update()
        .where(outbox.c.id.in_(sa.select(picked.c.id)))
        .values(
            claim_token=sa.bindparam("token"),
            claimed_until=db_now() + sa.bindparam("lease_s"),
        )
        .returning(*_MESSAGE_COLUMNS)
    )


def _in_transaction(engine: Engine, work: Callable[[Connection], _T]) -> _T:
    # Connection loss, a restarting server, SQLite's "database is locked": the relay waits and
    # tries again instead of exiting. Errors in the SQL itself stay what they are.
    try:
        with engine.begin() as connection:
            return work(connection)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
        raise DatabaseUnavailable(f"database unavailable ({reason_of(error)})") from error


def _user_row(user: NewUser) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "username": user.username,
        "username_key": username_key(user.username),
        "email": user.email,
        "email_key": email_key(user.email),
        "full_name": user.full_name,
        "created_at": user.created_at,
    }


def _outbox_row(message: OutboxMessage) -> dict[str, Any]:
    return {
        "event_id": message.event_id,
        "event_type": message.event_type,
        "routing_key": message.routing_key,
        "payload": message.body.decode("utf-8"),
        "headers": json.dumps(dict(message.headers), separators=(",", ":")),
        "correlation_id": message.correlation_id,
        "created_at": message.created_at,
        "traceparent": message.traceparent,
    }


_MESSAGE_COLUMNS: Final = (
    outbox.c.id,
    outbox.c.event_id,
    outbox.c.event_type,
    outbox.c.routing_key,
    outbox.c.payload,
    outbox.c.headers,
    outbox.c.correlation_id,
    outbox.c.created_at,
    outbox.c.traceparent,
)


def _by_id(message: OutboxMessage) -> int:
    return message.id


def _message(row: Sequence[Any]) -> OutboxMessage:
    # By position, in the order of _MESSAGE_COLUMNS.
    (
        row_id,
        event_id,
        event_type,
        routing_key,
        payload,
        headers,
        correlation_id,
        created_at,
        traceparent,
    ) = row
    if created_at.tzinfo is None:  # SQLite keeps no zone; every value written is UTC
        created_at = created_at.replace(tzinfo=UTC)
    return OutboxMessage(
        id=int(row_id),
        event_id=event_id,
        event_type=event_type,
        routing_key=routing_key,
        body=payload.encode("utf-8"),
        headers=_decoded_headers(headers),
        correlation_id=correlation_id,
        created_at=created_at,
        traceparent=traceparent,
    )


@functools.lru_cache(maxsize=64)
def _decoded_headers(text: str) -> Mapping[str, Any]:
    # Every event of one schema version carries the same few headers: decode each text once.
    # Read-only, since the cached mapping is shared (the publisher copies it).
    return MappingProxyType(json.loads(text))


def _slices(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), _IN_LIST_SIZE):
        yield items[start : start + _IN_LIST_SIZE]
