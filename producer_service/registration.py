"""The registration use case: validate, then store the user and its event in one transaction.

Nothing is published here. The event waits in the outbox, committed together with the user, so
a registration can never exist without its event nor an event without its registration.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from producer_service.ports import NewUser, OutboxMessage, RegistrationStore
from producer_service.validation import validate_registration
from shared.events import EVENT_TYPE, SCHEMA_VERSION, new_user_registered, serialise
from shared.ids import new_id
from shared.tracing import current_traceparent, get_tracer, traced

# The span of the commit; each publish of the event, whenever it happens, is its child.
REGISTRATION_SPAN: Final = "register user"
_tracer = get_tracer(__name__)


@dataclass(frozen=True, slots=True)
class Registration:
    """What a stored registration returns to its caller."""

    event_id: str
    user_id: str
    username: str
    email: str
    full_name: str | None
    correlation_id: str
    traceparent: str | None = None  # of the registration's span, when tracing is on


class RegisterUser:
    """Callable use case; raises `ValidationError` (exit 2) or `DuplicateUser` (exit 3)."""

    def __init__(self, store: RegistrationStore, *, routing_key: str) -> None:
        self._store = store
        self._routing_key = routing_key

    def __call__(
        self,
        username: str,
        email: str,
        full_name: str | None = None,
        *,
        correlation_id: str | None = None,
    ) -> Registration:
        with traced(_tracer, REGISTRATION_SPAN) as span:
            registration = self._register(username, email, full_name, correlation_id)
            if span is not None:
                span.set_attribute("messaging.message.id", registration.event_id)
                span.set_attribute("user.id", registration.user_id)
            return registration

    def _register(
        self, username: str, email: str, full_name: str | None, correlation_id: str | None
    ) -> Registration:
        valid = validate_registration(username, email, full_name)
        now = datetime.now(UTC)
        user = NewUser(
            # Time-ordered: the key of the users table's primary-key index (shared/ids.py).
            user_id=new_id(),
            username=valid.username,
            email=valid.email,
            full_name=valid.full_name,
            created_at=now,
        )
        event = new_user_registered(
            user_id=user.user_id,
            username=user.username,
            email=user.email,
            full_name=user.full_name,
            occurred_at=now,
        )
        # One id ties together the log lines of this command, the broker message and the
        # worker's handling of it.
        correlation_id = correlation_id or str(uuid.uuid4())
        message = OutboxMessage(
            event_id=event.event_id,
            event_type=EVENT_TYPE,
            routing_key=self._routing_key,
            body=serialise(event),
            correlation_id=correlation_id,
            created_at=now,
            headers={"schema_version": SCHEMA_VERSION},
            traceparent=current_traceparent(),
        )
        self._store.add_user_with_event(user, message)
        return Registration(
            event_id=event.event_id,
            user_id=user.user_id,
            username=user.username,
            email=user.email,
            full_name=user.full_name,
            correlation_id=correlation_id,
            traceparent=message.traceparent,
        )
