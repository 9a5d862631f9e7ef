"""docker/rabbitmq/definitions.json agrees with the code and grants no more than it should.

Pure checks of the file; test_broker_permissions.py proves the same file on a real node.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import pytest

from shared import topology
from tests.support.broker import REPO_ROOT
from tests.support.compose import DEMO_BROKER_PASSWORDS

DEFINITIONS = REPO_ROOT / "docker" / "rabbitmq" / "definitions.json"
RABBITMQ_CONF = REPO_ROOT / "docker" / "rabbitmq" / "rabbitmq.conf"
DEMO_PASSWORDS = DEMO_BROKER_PASSWORDS


@pytest.fixture(scope="module")
def definitions() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DEFINITIONS.read_text())
    return loaded


def _permissions(definitions: dict[str, Any], user: str) -> dict[str, str]:
    (found,) = [p for p in definitions["permissions"] if p["user"] == user]
    return {kind: found[kind] for kind in ("configure", "write", "read")}


def _grants(pattern: str, resource: str) -> bool:
    # RabbitMQ matches permission patterns against the resource name with re:run (PCRE).
    return re.search(pattern, resource) is not None


def test_the_broker_loads_this_file_at_boot() -> None:
    settings = {
        key.strip(): value.strip()
        for key, _, value in (
            line.partition("=")
            for line in RABBITMQ_CONF.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        )
    }
    assert settings["load_definitions"] == "/etc/rabbitmq/definitions.json"


def test_users_are_the_three_services_and_no_guest(definitions: dict[str, Any]) -> None:
    assert {user["name"] for user in definitions["users"]} == set(DEMO_PASSWORDS)
    tags = {user["name"]: user["tags"] for user in definitions["users"]}
    assert tags["admin"] == ["administrator"]
    assert tags["producer"] == tags["email_worker"] == []


@pytest.mark.parametrize("user", sorted(DEMO_PASSWORDS))
def test_password_hashes_match_the_documented_demo_passwords(
    definitions: dict[str, Any], user: str
) -> None:
    (entry,) = [u for u in definitions["users"] if u["name"] == user]
    assert entry["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    # RabbitMQ's scheme: base64(salt + sha256(salt + password)) with a 4-byte salt.
    decoded = base64.b64decode(entry["password_hash"])
    salt, digest = decoded[:4], decoded[4:]
    assert digest == hashlib.sha256(salt + DEMO_PASSWORDS[user].encode()).digest()


def test_services_may_configure_nothing(definitions: dict[str, Any]) -> None:
    # Configure covers declare *and delete*; the topology is pre-declared in this file instead.
    every_name = [
        topology.EXCHANGE,
        topology.QUEUE,
        topology.DEAD_LETTER_QUEUE,
        topology.DEAD_LETTER_EXCHANGE,
        topology.RETRY_EXCHANGE,
        "amq.default",
    ]
    for user in ("producer", "email_worker"):
        pattern = _permissions(definitions, user)["configure"]
        assert not any(_grants(pattern, name) for name in every_name), user


def test_producer_writes_only_to_the_events_exchange(definitions: dict[str, Any]) -> None:
    granted = _permissions(definitions, "producer")
    assert _grants(granted["write"], topology.EXCHANGE)
    for name in (topology.DEAD_LETTER_EXCHANGE, topology.RETRY_EXCHANGE, "amq.default"):
        assert not _grants(granted["write"], name)
    for name in (topology.QUEUE, topology.DEAD_LETTER_QUEUE):
        assert not _grants(granted["read"], name)


def test_worker_reads_its_queues_and_writes_only_retry_and_dead_letter_exchanges(
    definitions: dict[str, Any],
) -> None:
    granted = _permissions(definitions, "email_worker")
    assert _grants(granted["read"], topology.QUEUE)
    assert _grants(granted["read"], topology.DEAD_LETTER_QUEUE)
    assert _grants(granted["write"], topology.RETRY_EXCHANGE)
    assert _grants(granted["write"], topology.DEAD_LETTER_EXCHANGE)
    for name in (topology.EXCHANGE, "amq.default"):
        assert not _grants(granted["write"], name)


def test_predeclared_queues_have_exactly_the_arguments_of_the_code(
    definitions: dict[str, Any],
) -> None:
    expected = {
        topology.QUEUE: topology.main_queue_arguments(),
        topology.DEAD_LETTER_QUEUE: topology.dead_letter_queue_arguments(),
        **{
            topology.retry_queue_name(delay): topology.retry_queue_arguments(delay)
            for delay in topology.DEFAULT_RETRY_DELAYS_S
        },
    }
    declared = {q["name"]: q["arguments"] for q in definitions["queues"] if q["vhost"] == "/"}
    assert declared == expected
    assert all(q["durable"] and not q["auto_delete"] for q in definitions["queues"])


def test_predeclared_exchanges_and_bindings_match_the_code(definitions: dict[str, Any]) -> None:
    exchanges = {e["name"]: e["type"] for e in definitions["exchanges"]}
    assert exchanges == {
        topology.EXCHANGE: "topic",
        topology.DEAD_LETTER_EXCHANGE: "direct",
        topology.RETRY_EXCHANGE: "direct",
    }
    bindings = {(b["source"], b["destination"], b["routing_key"]) for b in definitions["bindings"]}
    assert bindings == set(topology.bindings(topology.DEFAULT_RETRY_DELAYS_S))
