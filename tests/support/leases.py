"""Ageing the worker's claims in tests: leases run by the database's clock, not an injected one."""

from __future__ import annotations

from email_consumer.processed_events import SqlProcessedEvents, processed_events


def pass_time_on_leases(store: SqlProcessedEvents, seconds: float) -> None:
    """Move every lease's end `seconds` back: the database's clock moved on that much."""
    table = processed_events
    with store._engine.begin() as connection:
        connection.execute(
            table.update()
            .where(table.c.lease_until.is_not(None))
            .values(lease_until=table.c.lease_until - seconds)
        )
