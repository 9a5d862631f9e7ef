"""docs/asyncapi.yaml and the code agree on the broker: what shared/topology.py declares on a
real RabbitMQ is exactly what the document describes, arguments and bindings included."""

from __future__ import annotations

from typing import Any

import pika
import pytest

from shared import topology as code
from tests.contract.asyncapi_topology import (
    Topology,
    broker_topology,
    documented_topology,
    vhosts_in_document,
)
from tests.support.broker import BrokerAdmin

pytestmark = pytest.mark.broker


@pytest.fixture
def declared(broker_admin: BrokerAdmin, vhost: str, amqp_url: str) -> Topology:
    """The topology the services declare at start-up (default retry delays), as listed by
    rabbitmqctl from the broker."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        code.declare_topology(connection.channel())
    finally:
        connection.close()
    return broker_topology(broker_admin, vhost)


def test_exchanges_match(declared: Topology, asyncapi_document: dict[str, Any]) -> None:
    documented, _targets = documented_topology(asyncapi_document)
    assert documented.exchanges == declared.exchanges


def test_queues_and_their_arguments_match(
    declared: Topology, asyncapi_document: dict[str, Any]
) -> None:
    documented, _targets = documented_topology(asyncapi_document)
    assert sorted(documented.queues) == sorted(declared.queues)
    for name, queue in declared.queues.items():
        in_document = documented.queues[name]
        # Arguments first and on their own, so a failure names the argument that differs.
        assert dict(in_document.arguments) == dict(queue.arguments), f"arguments of {name}"
        assert in_document == queue, f"queue {name}"


def test_bindings_match(declared: Topology, asyncapi_document: dict[str, Any]) -> None:
    documented, _targets = documented_topology(asyncapi_document)
    assert documented.bindings == declared.bindings


def test_every_documented_send_reaches_a_queue(
    declared: Topology, asyncapi_document: dict[str, Any]
) -> None:
    # A routing-key channel names where a sender publishes (with mandatory): the broker must
    # route that exchange and key to a queue, or the publish would come back.
    _documented, targets = documented_topology(asyncapi_document)
    routed = {(exchange, key) for exchange, _queue, key in declared.bindings}
    assert targets <= routed
    # And what the code's senders use is documented: the producer, the worker's retries and
    # dead letters, `dlq replay`.
    used = {
        (code.EXCHANGE, code.ROUTING_KEY),
        (code.DEAD_LETTER_EXCHANGE, code.DEAD_LETTER_QUEUE),
        (code.RETRY_EXCHANGE, code.QUEUE),
        *((code.RETRY_EXCHANGE, code.retry_queue_name(d)) for d in code.DEFAULT_RETRY_DELAYS_S),
    }
    assert targets == used


def test_the_document_names_the_default_vhost(asyncapi_document: dict[str, Any]) -> None:
    assert vhosts_in_document(asyncapi_document) == {"/"}
