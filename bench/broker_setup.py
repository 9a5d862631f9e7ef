"""Declaring the contract's topology in a benchmark vhost and looking at its queues."""

from __future__ import annotations

import pika

from shared.topology import declare_topology


def declare_contract_topology(amqp_url: str) -> None:
    """The exchanges and queues both services declare, so events have somewhere to go."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        declare_topology(connection.channel())
    finally:
        connection.close()


def queue_depth(amqp_url: str, queue: str) -> int:
    """Messages ready in `queue` (read through AMQP, which is exact, unlike rabbitmqctl)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        declared = connection.channel().queue_declare(queue, passive=True)
        return int(declared.method.message_count)
    finally:
        connection.close()


def purge_queue(amqp_url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().queue_purge(queue)
    finally:
        connection.close()
