"""The header names in docs/asyncapi.yaml are the ones the code writes: the producer's on a
published event, the worker's on events it parks for a retry or dead-letters (read from real
messages on a real broker, and from email_consumer/failure_headers.py's constants)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from email_consumer import failure_headers
from producer_service.registration import RegisterUser
from shared import topology
from shared.events import to_dict
from shared.tracing import TRACEPARENT
from tests.support.broker import ready_count
from tests.support.producer_fakes import FakeRegistrationStore
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import (
    dead_letters,
    new_event,
    peek,
    publish,
    publish_event,
    running_worker,
)

# Written by the broker itself when it dead-letters or redelivers, not by this code; the
# document mentions them in prose.
BROKER_HEADER_PREFIX = "x-"
# Written by the publisher, not the registration, and only when the event was traced: the W3C
# trace context is optional by contract (consumers propagate it when present and must not
# require it); tests/integration/test_tracing_outbox.py checks what the publisher writes.
WRITTEN_WHEN_TRACED = {TRACEPARENT}


def _schemas(document: dict[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = document["components"]["schemas"]
    return schemas


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    # AsyncAPI's schema format is a superset of draft-07.
    return jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )


def _failure_header_constants() -> set[str]:
    return {
        value
        for name, value in vars(failure_headers).items()
        if name.isupper() and isinstance(value, str)
    }


def test_documented_failure_headers_are_the_code_constants(
    asyncapi_document: dict[str, Any],
) -> None:
    documented = set(_schemas(asyncapi_document)["failureHeaders"]["properties"])
    # A failed event keeps the headers it was published with.
    kept = {"schema_version", *WRITTEN_WHEN_TRACED}
    assert documented - kept == _failure_header_constants()
    assert kept <= documented


def test_the_producers_headers_are_documented(asyncapi_document: dict[str, Any]) -> None:
    store = FakeRegistrationStore()
    RegisterUser(store, routing_key=topology.ROUTING_KEY)("alice", "alice@example.com", None)
    [message] = store.messages
    schema = _schemas(asyncapi_document)["publishedHeaders"]
    headers = dict(message.headers)
    assert set(headers) <= set(schema["properties"])
    assert set(schema["required"]) <= set(headers)
    _validator(schema).validate(headers)
    written_somewhere = set(headers) | {failure_headers.REPLAY_COUNT, *WRITTEN_WHEN_TRACED}
    assert set(schema["properties"]) == written_somewhere


@pytest.mark.broker
def test_retried_and_dead_lettered_messages_carry_the_documented_headers(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path, asyncapi_document: dict[str, Any]
) -> None:
    schema = _schemas(asyncapi_document)["failureHeaders"]
    smtp_server.fail_transiently(1)
    retried = new_event("rita")
    malformed = {**to_dict(new_event("mal")), "schema_version": 2}
    retry_queue = topology.retry_queue_name(600)
    environment = {"RETRY_ATTEMPTS": "1", "RETRY_DELAYS_S": "600"}
    with running_worker(amqp_url, smtp_server.environment(), tmp_path, **environment):
        publish_event(amqp_url, retried)
        wait_until(lambda: ready_count(amqp_url, retry_queue) == 1, what="the parked event")
        publish(amqp_url, json.dumps(malformed).encode(), message_id="malformed")
        wait_until(lambda: len(dead_letters(amqp_url)) == 1, what="the dead letter")
    [parked] = peek(amqp_url, retry_queue)
    [dead] = dead_letters(amqp_url)
    documented = set(schema["properties"])
    for message in (parked, dead):
        headers = message.headers
        written = {name for name in headers if not name.startswith(BROKER_HEADER_PREFIX)}
        assert written <= documented, written - documented
        _validator(schema).validate(headers)
    assert failure_headers.SMTP_CODE in parked.headers
    assert failure_headers.DEAD_LETTER_REASON not in parked.headers
    assert dead.headers[failure_headers.DEAD_LETTER_REASON] == "malformed"
