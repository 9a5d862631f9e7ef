"""The registration use case: one user and its contract event stored together, or nothing."""

from __future__ import annotations

import pytest

from producer_service.ports import DuplicateUser
from producer_service.registration import RegisterUser
from producer_service.validation import ValidationError
from shared.events import parse_user_registered
from tests.support.producer_fakes import FakeRegistrationStore


def test_registration_stores_the_user_with_a_contract_event() -> None:
    store = FakeRegistrationStore()
    register = RegisterUser(store, routing_key="user.registered")

    registration = register("alice", "alice@EXAMPLE.com", "Alice", correlation_id="c-1")

    [(user, message)] = store.stored
    event = parse_user_registered(message.body)
    assert event.event_id == registration.event_id == message.event_id
    assert event.data.user_id == user.user_id == registration.user_id
    assert (event.data.username, event.data.email, event.data.full_name) == (
        "alice",
        "alice@example.com",
        "Alice",
    )
    assert message.routing_key == "user.registered"
    assert message.correlation_id == "c-1"
    assert message.headers == {"schema_version": 1}


def test_registration_stores_nothing_for_invalid_input() -> None:
    store = FakeRegistrationStore()

    with pytest.raises(ValidationError):
        RegisterUser(store, routing_key="user.registered")("a", "alice@example.com")

    assert store.stored == []


def test_registration_passes_a_conflict_on() -> None:
    register = RegisterUser(FakeRegistrationStore(duplicate=True), routing_key="user.registered")

    with pytest.raises(DuplicateUser, match="already registered"):
        register("alice", "alice@example.com")
