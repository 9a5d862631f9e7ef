"""The events the benchmark sends: real `user_registered` events, built before any timing."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pika

from shared.events import (
    EVENT_TYPE,
    SCHEMA_VERSION,
    UserRegistered,
    new_user_registered,
    serialise,
    to_dict,
)


def make_events(count: int, *, tag: str = "bench") -> list[UserRegistered]:
    """`count` distinct events addressed to example.com users."""
    events = []
    for number in range(count):
        username = f"{tag}{number}"
        events.append(
            new_user_registered(
                user_id=str(uuid.uuid4()),
                username=username,
                email=f"{username}@example.com",
                full_name=f"Bench User {number}" if number % 2 else None,
            )
        )
    return events


def amqp_properties(event: UserRegistered) -> pika.BasicProperties:
    """The AMQP properties the contract gives a published event."""
    return pika.BasicProperties(
        delivery_mode=pika.DeliveryMode.Persistent,
        content_type="application/json",
        message_id=event.event_id,
        type=EVENT_TYPE,
        app_id="producer_service",
        timestamp=int(time.time()),
        correlation_id=event.event_id,
        headers={"schema_version": SCHEMA_VERSION},
    )


def wire_messages(events: list[UserRegistered]) -> list[tuple[bytes, pika.BasicProperties]]:
    """Body and properties of each event, ready to publish."""
    return [(serialise(event), amqp_properties(event)) for event in events]


def payload(event: UserRegistered) -> dict[str, Any]:
    """The event as the JSON document the peers (Dramatiq, Celery) carry as their argument."""
    return to_dict(event)
