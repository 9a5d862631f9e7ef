"""Least privilege on the broker: the users of docker/rabbitmq/definitions.json, on a real node.

The node boots from the very file docker-compose.yml mounts, so what is proved here is what the
compose stack runs with: each service can do its job and is refused everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

from shared import topology
from tests.support.broker import REPO_ROOT
from tests.support.compose import DEMO_BROKER_PASSWORDS
from tests.support.rabbit_node import RabbitNode

pytestmark = [pytest.mark.private_node, pytest.mark.slow]

DEFINITIONS = REPO_ROOT / "docker" / "rabbitmq" / "definitions.json"
RABBITMQ_CONF = REPO_ROOT / "docker" / "rabbitmq" / "rabbitmq.conf"
# The demo passwords documented in the README; docker-compose.yml uses the same defaults.
PASSWORDS = DEMO_BROKER_PASSWORDS
ACCESS_REFUSED = 403

Operation = Callable[[Any], object]


@pytest.fixture(scope="module")
def compose_broker() -> Iterator[RabbitNode]:
    """A private node configured like the compose broker: definitions loaded at boot."""
    node = RabbitNode(definitions=DEFINITIONS)
    try:
        node.start()
        yield node
    finally:
        node.destroy()


def _connect(node: RabbitNode, user: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(node.url_for(user, PASSWORDS[user])))


def _outcome(node: RabbitNode, user: str, operation: Operation) -> int | None:
    """Run `operation` on a fresh channel as `user`: None if allowed, else the AMQP reply code."""
    connection = _connect(node, user)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        try:
            operation(channel)
        except pika.exceptions.ChannelClosedByBroker as error:
            return int(error.reply_code)
        return None
    finally:
        if connection.is_open:
            connection.close()


def _publish(exchange: str, routing_key: str) -> Operation:
    def publish(channel: Any) -> None:
        channel.basic_publish(exchange, routing_key, b"{}", mandatory=True)

    return publish


def _get(queue: str) -> Operation:
    def get(channel: Any) -> None:
        channel.basic_get(queue, auto_ack=False)

    return get


def _consume(queue: str) -> Operation:
    def consume(channel: Any) -> None:
        channel.basic_consume(queue, lambda *_: None)

    return consume


RETRY_QUEUE = topology.retry_queue_name(topology.DEFAULT_RETRY_DELAYS_S[0])

# (what the user must not do, the operation): each must be refused with ACCESS_REFUSED.
PRODUCER_REFUSED: list[tuple[str, Operation]] = [
    ("consume the worker's queue", _consume(topology.QUEUE)),
    ("get from the worker's queue", _get(topology.QUEUE)),
    ("read the dead-letter queue", _get(topology.DEAD_LETTER_QUEUE)),
    ("publish to the dead-letter exchange", _publish(topology.DEAD_LETTER_EXCHANGE, "x")),
    ("publish to the retry exchange", _publish(topology.RETRY_EXCHANGE, RETRY_QUEUE)),
    ("publish straight to a queue", _publish("", topology.QUEUE)),
    ("delete the worker's queue", lambda channel: channel.queue_delete(topology.QUEUE)),
    ("purge the worker's queue", lambda channel: channel.queue_purge(topology.QUEUE)),
    ("delete the exchange", lambda channel: channel.exchange_delete(topology.EXCHANGE)),
    ("declare a queue", lambda channel: channel.queue_declare("producer.own")),
    (
        "bind the exchange to a queue of its choosing",
        lambda channel: channel.queue_bind(topology.DEAD_LETTER_QUEUE, topology.EXCHANGE, "#"),
    ),
]

WORKER_REFUSED: list[tuple[str, Operation]] = [
    ("publish a user_registered event", _publish(topology.EXCHANGE, topology.ROUTING_KEY)),
    ("publish straight to a queue", _publish("", topology.QUEUE)),
    ("delete its queue", lambda channel: channel.queue_delete(topology.QUEUE)),
    (
        "delete the dead-letter queue",
        lambda channel: channel.queue_delete(topology.DEAD_LETTER_QUEUE),
    ),
    ("delete the exchange", lambda channel: channel.exchange_delete(topology.EXCHANGE)),
    ("read a retry queue early", _get(RETRY_QUEUE)),
    ("declare a queue", lambda channel: channel.queue_declare("worker.own")),
    (
        "redeclare the exchange",
        lambda channel: channel.exchange_declare(topology.EXCHANGE, "topic", durable=True),
    ),
    (
        "bind the exchange to the dead-letter queue",
        lambda channel: channel.queue_bind(topology.DEAD_LETTER_QUEUE, topology.EXCHANGE, "#"),
    ),
]


@pytest.mark.parametrize(
    ("what", "operation"), PRODUCER_REFUSED, ids=[w for w, _ in PRODUCER_REFUSED]
)
def test_producer_is_refused(compose_broker: RabbitNode, what: str, operation: Operation) -> None:
    assert _outcome(compose_broker, "producer", operation) == ACCESS_REFUSED, what


@pytest.mark.parametrize(("what", "operation"), WORKER_REFUSED, ids=[w for w, _ in WORKER_REFUSED])
def test_worker_is_refused(compose_broker: RabbitNode, what: str, operation: Operation) -> None:
    assert _outcome(compose_broker, "email_worker", operation) == ACCESS_REFUSED, what


def test_each_service_may_do_its_own_job(compose_broker: RabbitNode) -> None:
    # The producer publishes an event; the broker routes it to the worker's queue (confirmed,
    # not returned, so the binding from definitions.json is in place).
    assert (
        _outcome(compose_broker, "producer", _publish(topology.EXCHANGE, topology.ROUTING_KEY))
        is None
    )
    # The producer checks, without declaring, that the topology is there.
    assert (
        _outcome(
            compose_broker, "producer", lambda c: c.queue_declare(topology.QUEUE, passive=True)
        )
        is None
    )

    # The worker takes the event, parks it for a delayed retry and dead-letters it.
    connection = _connect(compose_broker, "email_worker")
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        method, _properties, body = channel.basic_get(topology.QUEUE)
        assert method is not None
        assert body == b"{}"
        channel.basic_publish(topology.RETRY_EXCHANGE, RETRY_QUEUE, body, mandatory=True)
        channel.basic_publish(
            topology.DEAD_LETTER_EXCHANGE, topology.DEAD_LETTER_QUEUE, body, mandatory=True
        )
        channel.basic_ack(method.delivery_tag)
        # The operator's `dlq list` reads the dead-letter queue as the worker.
        dead, _properties, _body = channel.basic_get(topology.DEAD_LETTER_QUEUE)
        assert dead is not None
        channel.basic_ack(dead.delivery_tag)
    finally:
        connection.close()


def test_there_is_no_guest_user(compose_broker: RabbitNode) -> None:
    parameters = pika.URLParameters(compose_broker.url_for("guest", "guest"))
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(parameters)


def test_a_wrong_password_is_refused(compose_broker: RabbitNode) -> None:
    parameters = pika.URLParameters(compose_broker.url_for("producer", "not-the-password"))
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(parameters)


def test_the_predeclared_topology_is_exactly_what_the_services_declare(
    compose_broker: RabbitNode,
) -> None:
    # RabbitMQ refuses (PRECONDITION_FAILED) a redeclaration whose arguments differ, so the
    # code's arguments, declared actively (not passively, as declare_topology first does) on
    # the definitions' topology, prove both identical.
    queues = {
        topology.QUEUE: topology.main_queue_arguments(),
        topology.DEAD_LETTER_QUEUE: topology.dead_letter_queue_arguments(),
        **{
            topology.retry_queue_name(d): topology.retry_queue_arguments(d)
            for d in topology.DEFAULT_RETRY_DELAYS_S
        },
    }
    connection = _connect(compose_broker, "admin")
    try:
        channel = connection.channel()
        channel.exchange_declare(topology.EXCHANGE, "topic", durable=True)
        channel.exchange_declare(topology.DEAD_LETTER_EXCHANGE, "direct", durable=True)
        channel.exchange_declare(topology.RETRY_EXCHANGE, "direct", durable=True)
        for name, arguments in queues.items():
            channel.queue_declare(name, durable=True, arguments=arguments)
    finally:
        connection.close()
    listed = compose_broker.rabbitmqctl("list_queues", "name", "--quiet", "--no-table-headers")
    assert set(listed.split()) == set(queues)
