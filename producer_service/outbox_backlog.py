"""How far behind the outbox is: read at each metrics scrape, in one short read transaction.

Three index lookups, whatever the table's size: the pending rows through the partial index the
relay uses (`ix_outbox_pending`; normally few), the oldest of them by id (ids grow in insertion
order), and the highest id (the primary key), which only grows: every registration stores one
event, so its rate is the registration rate, whichever process registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from producer_service.schema import outbox

_PENDING: Final = outbox.c.published_at.is_(None)
_COUNT_PENDING: Final = sa.select(sa.func.count()).select_from(outbox).where(_PENDING)
_OLDEST_PENDING: Final = (
    sa.select(outbox.c.created_at).where(_PENDING).order_by(outbox.c.id).limit(1)
)
_HIGHEST_ID: Final = sa.select(sa.func.max(outbox.c.id))


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    pending: int
    oldest_pending_age_s: float
    """0 when nothing is pending."""
    highest_id: int


def read_backlog(engine: Engine) -> OutboxBacklog:
    with engine.connect() as connection:
        pending = connection.execute(_COUNT_PENDING).scalar_one()
        oldest = connection.execute(_OLDEST_PENDING).scalar_one_or_none()
        highest = connection.execute(_HIGHEST_ID).scalar_one_or_none()
    age_s = 0.0
    if oldest is not None:
        if oldest.tzinfo is None:  # SQLite keeps no zone; every value written is UTC
            oldest = oldest.replace(tzinfo=UTC)
        age_s = max((datetime.now(UTC) - oldest).total_seconds(), 0.0)
    return OutboxBacklog(pending=int(pending), oldest_pending_age_s=age_s, highest_id=highest or 0)
