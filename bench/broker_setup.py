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


def purge_queue(amqp_url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().queue_purge(queue)
    finally:
        connection.close()
