"""The private RabbitMQ node the fault tests rely on: it really crashes and really keeps data."""

from __future__ import annotations

import socket

import pika
import pika.exceptions
import pytest

from tests.support.rabbit_node import RabbitNode, RabbitNodeError

pytestmark = [pytest.mark.private_node, pytest.mark.slow]

MESSAGES = 50


def _publish_persistent(url: str, queue: str, arguments: dict[str, str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue, durable=True, arguments=arguments)
        for number in range(MESSAGES):
            channel.basic_publish(
                "",
                queue,
                str(number).encode(),
                pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
                mandatory=True,
            )
    finally:
        connection.close()


def _drain(url: str, queue: str) -> list[bytes]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        bodies: list[bytes] = []
        while True:
            method, _properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return bodies
            bodies.append(body)
    finally:
        connection.close()


def test_sigkilled_node_restarts_with_its_durable_queues_and_persistent_messages(
    private_rabbit: RabbitNode,
) -> None:
    queues = {"classic": {"x-queue-type": "classic"}, "quorum": {"x-queue-type": "quorum"}}
    for name, arguments in queues.items():
        _publish_persistent(private_rabbit.amqp_url, name, arguments)
    # The queues are brand new: see RabbitNode.sync_metadata for why this comes first.
    private_rabbit.sync_metadata()

    private_rabbit.kill()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika.URLParameters(private_rabbit.amqp_url))
    private_rabbit.start()

    expected = [str(number).encode() for number in range(MESSAGES)]
    for name in queues:
        assert _drain(private_rabbit.amqp_url, name) == expected


def test_rabbitmqctl_reaches_the_private_node_and_not_the_shared_one(
    private_rabbit: RabbitNode,
) -> None:
    private_rabbit.rabbitmqctl("add_vhost", "only-here")
    assert "only-here" in private_rabbit.rabbitmqctl("list_vhosts", "--quiet")
    assert private_rabbit.name in private_rabbit.rabbitmqctl("status")


def test_graceful_restart_keeps_data_and_destroy_leaves_nothing_behind() -> None:
    node = RabbitNode()
    try:
        node.start()
        _publish_persistent(node.amqp_url, "kept", {})
        node.restart()
        assert len(_drain(node.amqp_url, "kept")) == MESSAGES
    finally:
        node.destroy()
    assert not node.running
    assert not node.folder.exists()


@pytest.mark.parametrize("port_taken", ["amqp_port", "dist_port"])
def test_first_start_moves_to_new_ports_when_another_process_took_one(port_taken: str) -> None:
    node = RabbitNode()
    # What a concurrently starting node does to this one: bind a port between its choice and use.
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        squatter.bind(("127.0.0.1", getattr(node, port_taken)))
        squatter.listen()
        first_choice = getattr(node, port_taken)
        node.start()
        assert getattr(node, port_taken) != first_choice
        _publish_persistent(node.amqp_url, "after-clash", {})
        assert len(_drain(node.amqp_url, "after-clash")) == MESSAGES
    finally:
        squatter.close()
        node.destroy()


def test_a_restart_keeps_its_ports_and_fails_loudly_when_one_is_taken() -> None:
    node = RabbitNode()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        node.start()
        amqp_port = node.amqp_port
        node.stop()
        squatter.bind(("127.0.0.1", amqp_port))
        squatter.listen()
        with pytest.raises(RabbitNodeError, match="exited during start-up"):
            node.start()
        assert node.amqp_port == amqp_port
    finally:
        squatter.close()
        node.destroy()
