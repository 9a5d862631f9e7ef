"""The dead-letter queue's node down: a worker that starts meanwhile delivers at once.

The DLQ is a classic queue (shared.topology.dead_letter_queue_arguments says why), and a classic
queue lives on one node of a cluster. The quorum queues survive a node; the DLQ is unreachable
until its node returns. A worker (re)connecting meanwhile must not wait for it: on RabbitMQ 4.0 a
plain declaration of it stalled 66 s and then failed, at every reconnect, so the worker never
consumed again (CI, 2026-12-01, the cluster kill test's relay-node kill).

Two nodes: the quorum queues on the first with one replica each (the second's loss leaves them
whole), the DLQ on the second, which is killed before the worker starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from shared import topology
from tests.faults.harness import TEST_TIMEOUT_S, Stack, good_event
from tests.support.cluster import RabbitCluster
from tests.support.smtp import SmtpTestServer
from tests.support.worker import TEST_RETRY_DELAYS, publish

pytestmark = [pytest.mark.private_node, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT_S + 600)]


@pytest.fixture
def two_nodes() -> Iterator[RabbitCluster]:
    nodes = RabbitCluster(2)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.destroy()


def _place_topology(cluster: RabbitCluster) -> None:
    """Quorum queues with their single replica on the first node, the DLQ on the second (a
    classic queue is created on the node its declaring connection is on)."""
    first, second = cluster.nodes
    connection = pika.BlockingConnection(pika.URLParameters(first.amqp_url))
    try:
        channel = connection.channel()
        channel.queue_declare(
            topology.QUEUE, durable=True, arguments=topology.main_queue_arguments(1)
        )
        for delay_s in TEST_RETRY_DELAYS:
            channel.queue_declare(
                topology.retry_queue_name(delay_s),
                durable=True,
                arguments=topology.retry_queue_arguments(delay_s, 1),
            )
    finally:
        connection.close()
    connection = pika.BlockingConnection(pika.URLParameters(second.amqp_url))
    try:
        topology.declare_topology(connection.channel(), retry_delays_s=TEST_RETRY_DELAYS)
    finally:
        connection.close()
    assert cluster.leader_of(topology.QUEUE) is first


def test_a_worker_started_while_the_dead_letter_queues_node_is_down_delivers(
    two_nodes: RabbitCluster, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    first, second = two_nodes.nodes
    _place_topology(two_nodes)
    second.kill()
    stack = Stack(node=first, smtp=smtp_server, folder=tmp_path)
    try:
        worker = stack.start_worker()
        # Well under the 66 s a plain declaration of the DLQ waited on 4.0 before failing.
        stack.wait_consuming(worker, timeout_s=45)
        events = [good_event() for _ in range(5)]
        for event_id, body in events:
            publish(first.amqp_url, body, message_id=event_id)
        stack.wait_until_delivered([event_id for event_id, _body in events])
        assert worker.running
        assert stack.emails_by_event() == {event_id: 1 for event_id, _body in events}
    finally:
        stack.stop_all()
