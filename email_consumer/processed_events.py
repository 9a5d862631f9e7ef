"""The SQLAlchemy adapter of the `ProcessedEvents` port: table `processed_events`.

SQLite by default; on PostgreSQL several workers share it. Each operation is one short
transaction whose outcome the database decides atomically (an INSERT that may hit the primary
key, an UPDATE guarded by its WHERE clause), so two workers can never both hold a live claim.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from email_consumer.errors import StoreUnavailable
from email_consumer.ports import ClaimAnswer
from shared.database import (
    apply_migrations,
    checkpoint_quietly,
    create_database_engine,
    db_now,
    is_sqlite,
    relax_commit_for_housekeeping,
)

COMPONENT = "email_consumer"
# One retention batch: a few milliseconds of deleting on SQLite, so a claim that finds the lock
# taken waits about that long; the pause after it lets the waiting claims and marks through.
RETENTION_BATCH_ROWS = 500
RETENTION_PAUSE_S = 0.02
_SENT = "sent"
_CLAIMED = "claimed"

_metadata = sa.MetaData()
processed_events = sa.Table(
    "processed_events",
    _metadata,
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("claim_token", sa.String(64), nullable=True),
    # Seconds since the epoch by the database's clock (`db_now`), which every worker sharing
    # the database compares with the same clock: comparable on every backend without time-zone
    # surprises.
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("sent_at", sa.Float, nullable=True),
)


# Retention finds what is eligible by a range scan on these, not by reading the whole table.
# Only claims have a lease (a sent record's is NULL): that index holds the few live claims.
_RETENTION_INDEXES = (
    sa.Index("ix_processed_events_sent_at", processed_events.c.sent_at),
    sa.Index(
        "ix_processed_events_lease_until",
        processed_events.c.lease_until,
        sqlite_where=processed_events.c.lease_until.is_not(None),
        postgresql_where=processed_events.c.lease_until.is_not(None),
    ),
)


def _create_processed_events(connection: Connection) -> None:
    processed_events.create(connection)


def _index_retention(connection: Connection) -> None:
    # Step 1 creates the indexes with the table since they were defined; older tables lack them.
    for index in _RETENTION_INDEXES:
        index.create(connection, checkfirst=True)


MIGRATIONS = (_create_processed_events, _index_retention)

# The per-email statements, built once with bound parameters: built per call, they cost more
# than running them. (Parameter names differ from column names, which SQLAlchemy reserves for SET.)
_table = processed_events
_INSERT_CLAIM = _table.insert().values(
    event_id=sa.bindparam("p_event_id"),
    status=_CLAIMED,
    claim_token=sa.bindparam("p_token"),
    lease_until=db_now() + sa.bindparam("p_lease_s"),
)
# Takes over a claim only when its lease ran out, in the same atomic UPDATE. Both the lease and
# the test run by the database's clock: a worker whose own clock runs ahead takes over nothing.
_TAKE_OVER_EXPIRED_CLAIM = (
    _table.update()
    .where(
        _table.c.event_id == sa.bindparam("p_event_id"),
        _table.c.status == _CLAIMED,
        _table.c.lease_until < db_now(),
    )
    .values(claim_token=sa.bindparam("p_token"), lease_until=db_now() + sa.bindparam("p_lease_s"))
)
_SELECT_STATUS = sa.select(_table.c.status).where(_table.c.event_id == sa.bindparam("p_event_id"))
# Unconditional on the token: the email went out, whoever holds the claim now.
_MARK_SENT = (
    _table.update()
    .where(_table.c.event_id == sa.bindparam("p_event_id"))
    .values(status=_SENT, claim_token=None, lease_until=None, sent_at=sa.bindparam("p_sent_at"))
)
_RELEASE = _table.delete().where(
    _table.c.event_id == sa.bindparam("p_event_id"),
    _table.c.status == _CLAIMED,
    _table.c.claim_token == sa.bindparam("p_token"),
)

# "Maybe sent" (see SqlProcessedEvents._claim_resend); String(16) holds each name.
_UNCERTAIN = "uncertain"
_RESENDING = "resending"
_UNCERTAIN_FINAL = "uncertain_final"
_MAYBE_SENT_STATES = (_UNCERTAIN, _RESENDING, _UNCERTAIN_FINAL)
# Whether the lease ended is asked of the database's clock too (NULL when there is no lease).
_SELECT_STATE = sa.select(_table.c.status, _table.c.lease_until < db_now()).where(
    _table.c.event_id == sa.bindparam("p_event_id")
)
_START_RESEND = (
    _table.update()
    .where(
        _table.c.event_id == sa.bindparam("p_event_id"),
        _table.c.status == _UNCERTAIN,
        _table.c.lease_until <= db_now(),
    )
    .values(
        status=_RESENDING,
        claim_token=sa.bindparam("p_token"),
        lease_until=db_now() + sa.bindparam("p_lease_s"),
    )
)
_FIRST_UNCERTAIN = (
    _table.update()
    .where(
        _table.c.event_id == sa.bindparam("p_event_id"),
        _table.c.status == _CLAIMED,
        _table.c.claim_token == sa.bindparam("p_token"),
    )
    .values(
        status=_UNCERTAIN,
        claim_token=None,
        lease_until=db_now() + sa.bindparam("p_resend_after_s"),
    )
)
_SECOND_UNCERTAIN = (
    _table.update()
    .where(
        _table.c.event_id == sa.bindparam("p_event_id"),
        _table.c.status == _RESENDING,
        _table.c.claim_token == sa.bindparam("p_token"),
    )
    .values(status=_UNCERTAIN_FINAL, claim_token=None, lease_until=None)
)
_RELEASE_RESEND = (
    _table.update()
    .where(
        _table.c.event_id == sa.bindparam("p_event_id"),
        _table.c.status == _RESENDING,
        _table.c.claim_token == sa.bindparam("p_token"),
    )
    .values(status=_UNCERTAIN, claim_token=None, lease_until=0.0)  # its resend may start at once
)


def _forget_batch(
    connection: Connection,
    status: str,
    when: sa.Column[float | None],
    cutoff: float,
    resume: float | None,
    limit: int,
) -> tuple[int, float | None]:
    """Delete up to `limit` records of `status` with `when` before `cutoff`, in index order
    from `resume` on; returns (deleted, where the next batch starts, or None when done).

    The next batch starts at this one's latest time, that time included: records sharing it
    that this batch left are still there, the ones it took are gone.
    """
    relax_commit_for_housekeeping(connection)
    picked = (
        sa.select(when, _table.c.event_id)
        .where(_table.c.status == status, when < cutoff)
        .order_by(when)
        .limit(limit)
    )
    if resume is not None:
        picked = picked.where(when >= resume)
    keys = connection.execute(picked).all()
    if not keys:
        return 0, None
    deleted = connection.execute(
        _table.delete().where(
            _table.c.event_id.in_([event_id for _, event_id in keys]),
            _table.c.status == status,
            when < cutoff,
        )
    ).rowcount
    return int(deleted), (float(keys[-1][0]) if len(keys) == limit else None)


class SqlProcessedEvents:
    """Claims and records processed events in a SQL database."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._engine = engine
        # For the record's own times (sent_at, the retention), never for a lease: leases run by
        # the database's clock, which every worker sharing the database reads alike.
        self._clock = clock
        self._sleep = sleep  # the pause between two retention batches
        # SQLite has one write lock per file, and a thread that finds it taken sleeps in growing
        # steps (1, 2, 5 ... 100 ms) instead of waking when it frees. The worker's own threads
        # queue on a Python lock instead, which hands over at once, and share one connection;
        # other processes still meet SQLite's busy timeout. On PostgreSQL, which locks rows, each
        # transaction takes a pooled connection and they run side by side.
        self._sqlite_lock = threading.Lock() if is_sqlite(engine) else None
        self._sqlite_connection: Connection | None = None
        # Set by `dispose`: a retention run on a pool thread stops after its current batch,
        # instead of keeping a stopped worker's process alive until the last batch.
        self._disposed = threading.Event()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        if self._sqlite_lock is None:
            with self._engine.begin() as connection:
                yield connection
            return
        with self._sqlite_lock:
            if self._sqlite_connection is None:
                self._sqlite_connection = self._engine.connect()
            try:
                with self._sqlite_connection.begin():
                    yield self._sqlite_connection
            except (sa.exc.OperationalError, sa.exc.InterfaceError):
                # The database itself failed (a full disk, a removed file): the next transaction
                # starts on a fresh connection. A refused INSERT (a known event) is no reason.
                self._sqlite_connection.close()
                self._sqlite_connection = None
                raise

    @classmethod
    def open(
        cls, url: str, clock: Callable[[], float] = time.time, *, connections: int | None = None
    ) -> SqlProcessedEvents:
        """Connect and bring the schema up to date; `StoreUnavailable` if the database is not.

        `connections`: on PostgreSQL, the pool's fixed size (`create_database_engine`); the
        worker passes its concurrency, so its threads never wait for one nor log in per burst.
        """
        engine = create_database_engine(url, connections=connections)
        try:
            apply_migrations(engine, COMPONENT, MIGRATIONS)
        except sa.exc.SQLAlchemyError as error:
            engine.dispose()
            # The type only: the message of a driver error may quote the URL and its password.
            raise StoreUnavailable(
                f"processed-events database unavailable: {type(error).__name__}"
            ) from None
        return cls(engine, clock)

    def claim(self, event_id: str, token: str, lease_s: float) -> ClaimAnswer:
        try:
            return self._claim(event_id, token, lease_s)
        except sa.exc.SQLAlchemyError as error:
            raise StoreUnavailable(f"processed-events store: {type(error).__name__}") from None

    def _claim(self, event_id: str, token: str, lease_s: float, *, rounds: int = 3) -> ClaimAnswer:
        params = {"p_event_id": event_id, "p_token": token, "p_lease_s": lease_s}
        try:
            with self._transaction() as connection:
                connection.execute(_INSERT_CLAIM, params)
            return ClaimAnswer.CLAIMED
        except sa.exc.IntegrityError:
            pass  # the event is known: sent, or claimed by someone else
        with self._transaction() as connection:
            taken_over = connection.execute(_TAKE_OVER_EXPIRED_CLAIM, params).rowcount
            if taken_over == 1:
                return ClaimAnswer.CLAIMED
            status = connection.execute(
                _SELECT_STATUS, {"p_event_id": event_id}
            ).scalar_one_or_none()
        if status == _SENT:
            return ClaimAnswer.ALREADY_SENT
        if status in _MAYBE_SENT_STATES:
            return self._claim_resend(event_id, token, lease_s)
        if status is None and rounds > 1:
            # Released between our INSERT and SELECT: free again, so try once more.
            return self._claim(event_id, token, lease_s, rounds=rounds - 1)
        return ClaimAnswer.HELD_ELSEWHERE

    def mark_sent(self, event_id: str, token: str) -> None:
        try:
            with self._transaction() as connection:
                connection.execute(_MARK_SENT, {"p_event_id": event_id, "p_sent_at": self._clock()})
        except sa.exc.SQLAlchemyError as error:
            raise StoreUnavailable(f"processed-events store: {type(error).__name__}") from None

    def release(self, event_id: str, token: str) -> None:
        try:
            with self._transaction() as connection:
                connection.execute(_RELEASE, {"p_event_id": event_id, "p_token": token})
        except sa.exc.SQLAlchemyError as error:
            raise StoreUnavailable(f"processed-events store: {type(error).__name__}") from None

    # -- "maybe sent": the reply to the final dot never came -------------------------------
    # States: UNCERTAIN (maybe sent once; `lease_until` is when its one resend may start),
    # RESENDING (the resend's claim; `lease_until` is its lease), UNCERTAIN_FINAL (maybe sent
    # twice: never again). A RESENDING claim whose lease ran out counts as UNCERTAIN_FINAL: its
    # worker died mid-resend, which may have delivered the second copy.

    def _claim_resend(self, event_id: str, token: str, lease_s: float) -> ClaimAnswer:
        params = {"p_event_id": event_id, "p_token": token, "p_lease_s": lease_s}
        with self._transaction() as connection:
            if connection.execute(_START_RESEND, params).rowcount == 1:
                return ClaimAnswer.RESEND
            row = connection.execute(_SELECT_STATE, {"p_event_id": event_id}).one_or_none()
        if row is None:
            return self._claim(event_id, token, lease_s, rounds=1)
        status, lease_ended = row
        if status == _SENT:
            return ClaimAnswer.ALREADY_SENT
        if status == _UNCERTAIN_FINAL or (status == _RESENDING and bool(lease_ended)):
            return ClaimAnswer.MAYBE_SENT
        return ClaimAnswer.HELD_ELSEWHERE

    def mark_uncertain(self, event_id: str, token: str, resend_after_s: float) -> bool:
        params = {
            "p_event_id": event_id,
            "p_token": token,
            "p_resend_after_s": resend_after_s,
        }
        try:
            with self._transaction() as connection:
                if connection.execute(_FIRST_UNCERTAIN, params).rowcount == 1:
                    return False
                connection.execute(_SECOND_UNCERTAIN, params)
        except sa.exc.SQLAlchemyError as error:
            raise StoreUnavailable(f"processed-events store: {type(error).__name__}") from None
        # After the resend, or the claim was lost: either way no resend is left.
        return True

    def release_resend(self, event_id: str, token: str) -> None:
        try:
            with self._transaction() as connection:
                connection.execute(_RELEASE_RESEND, {"p_event_id": event_id, "p_token": token})
        except sa.exc.SQLAlchemyError as error:
            raise StoreUnavailable(f"processed-events store: {type(error).__name__}") from None

    def forget_older_than(
        self,
        age_s: float,
        *,
        batch_size: int = RETENTION_BATCH_ROWS,
        pause_s: float = RETENTION_PAUSE_S,
    ) -> int:
        """Delete records older than `age_s` seconds; returns how many went.

        Sent records by their send time, and claims whose lease ended that long ago (their
        worker died and no redelivery came back). A redelivery older than the retention could
        then send again, so the retention must outlast every retry and replay window.

        In batches of `batch_size`, each its own short transaction, with `pause_s` between
        them: on SQLite a batch holds the lock every claim and mark takes, so the emails being
        sent wait for one batch at most, and the pause lets them all through before the next.
        After `dispose` no further batch starts (the next run goes on where this one stopped).
        """
        deleted = 0
        try:
            # Sent records by the worker's clock, which wrote `sent_at`; dead claims by the
            # database's, which set every lease.
            with self._engine.connect() as connection:  # a read: no lock, no commit
                database_now = float(connection.execute(sa.select(db_now())).scalar_one())
            passes = (
                (_SENT, _table.c.sent_at, self._clock() - age_s),
                (_CLAIMED, _table.c.lease_until, database_now - age_s),
            )
            for status, when, cutoff in passes:
                resume: float | None = None
                while True:
                    if deleted:
                        self._sleep(pause_s)
                    if self._disposed.is_set():
                        return deleted
                    with self._transaction() as connection:
                        count, resume = _forget_batch(
                            connection, status, when, cutoff, resume, batch_size
                        )
                    deleted += count
                    if self._sqlite_lock is not None and count:
                        checkpoint_quietly(self._engine)
                    if resume is None:
                        break
        except sa.exc.SQLAlchemyError as error:
            raise StoreUnavailable(f"processed-events store: {type(error).__name__}") from None
        return deleted

    def is_sent(self, event_id: str) -> bool:
        """For operators and tests: whether the event's email is recorded as sent."""
        with self._engine.connect() as connection:
            status = connection.execute(
                _SELECT_STATUS, {"p_event_id": event_id}
            ).scalar_one_or_none()
        return status == _SENT

    def dispose(self) -> None:
        self._disposed.set()
        if self._sqlite_lock is not None:
            with self._sqlite_lock:
                if self._sqlite_connection is not None:
                    self._sqlite_connection.close()
                    self._sqlite_connection = None
        self._engine.dispose()
