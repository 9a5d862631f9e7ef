"""A three-node cluster losing a member under a stream of registrations: kill -9 of the queue
leader's node (twice) and a node frozen with SIGSTOP for 30 s, a failure nothing announces.

The services get all three URLs in AMQP_URL and fail over on their own. Before each failure the
test looks at where the relay and the worker are connected, and picks the victim (moving the
queue's leader onto it) so that some failures hit the services' node and some do not. Each
failure reports: lost emails (must be 0), duplicates (at most the in-flight window per
failure), the seconds until emails flow past the in-flight window again (reported only), and
that the restarted or resumed node rejoined and its replica caught up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from shared.topology import QUEUE
from tests.faults.harness import (
    LONG,
    TEST_TIMEOUT_S,
    Account,
    Service,
    Stack,
    account,
    record,
    scaled,
)
from tests.support.cluster import RabbitCluster
from tests.support.rabbit_node import RabbitNode
from tests.support.smtp import SmtpTestServer

# Three nodes start in about a minute on a quiet machine, several on a busy one: a wider bound.
pytestmark = [pytest.mark.private_node, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT_S + 900)]

CONCURRENCY: Final = 4
# Deliveries the broker may have handed the worker and not yet seen acknowledged: the most a
# broker failure can make it receive twice (the processed-events record stops a second email).
IN_FLIGHT_WINDOW: Final = 3 * CONCURRENCY
PAUSE_S: Final = 30.0
# How long a service may hold no connection to any member before the test gives up on it.
_VICTIM_WAIT_S: Final = 30.0
KILL_ROLES: Final = ("relay", "worker", "idle") if LONG else ("relay", "worker")


@pytest.fixture
def cluster() -> Iterator[RabbitCluster]:
    nodes = RabbitCluster(3)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.destroy()


@pytest.fixture
def cluster_stack(
    cluster: RabbitCluster, smtp_server: SmtpTestServer, tmp_path: Path
) -> Iterator[Stack]:
    system = Stack(
        node=cluster.nodes[0],
        smtp=smtp_server,
        folder=tmp_path,
        extra_env={"AMQP_URL": cluster.amqp_urls, "WORKER_CONCURRENCY": str(CONCURRENCY)},
    )
    try:
        yield system
    finally:
        system.stop_all()


def _services(stack: Stack, cluster: RabbitCluster) -> tuple[Service, Service]:
    """The relay and the worker, started and connected to some member."""
    relay = stack.start_relay()
    worker = stack.start_worker()
    stack.wait_for(
        lambda: (
            bool(cluster.nodes_used_by(worker.process.pid))
            and bool(cluster.nodes_used_by(relay.process.pid))
        ),
        180,
        "the relay and the worker to connect",
    )
    return relay, worker


def _registrations(stack: Stack, count: int, rate: int) -> Service:
    """A stream of `count` registrations, once its first emails are out: the failure that
    follows lands in the middle of it."""
    floor = len(stack.smtp.messages)
    registrations = stack.start(
        "simulate", "producer-service", "simulate", "--count", str(count), "--rate", str(rate)
    )
    stack.wait_for(lambda: len(stack.smtp.messages) >= floor + 50, 180, "the stream's emails")
    return registrations


def _victim(cluster: RabbitCluster, relay: Service, worker: Service, role: str) -> RabbitNode:
    """The node the relay or the worker is connected to, or (`idle`) one neither is on.

    Asked again for a while: "no node fits the worker" failed one run under load (2 December
    2026) right after both services had been seen connected. A service's first connection may
    be its start-up credentials check (`refuse_bad_credentials`), closed before the one it
    works on opens, and a service reconnecting holds none for a moment.
    """
    deadline = time.monotonic() + _VICTIM_WAIT_S
    while True:
        if role == "idle":
            used = cluster.nodes_used_by(relay.process.pid) | cluster.nodes_used_by(
                worker.process.pid
            )
            candidates = [node for node in cluster.up() if node.name not in used]
        else:
            service = relay if role == "relay" else worker
            held = cluster.nodes_used_by(service.process.pid)
            candidates = [node for node in cluster.up() if node.name in held]
        if candidates or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert candidates, f"no running node fits {role!r} after {_VICTIM_WAIT_S:g} s"
    return candidates[0]


def _where(
    cluster: RabbitCluster, victim: RabbitNode, relay: Service, worker: Service
) -> dict[str, bool]:
    return {
        "relay_on_victim": victim.name in cluster.nodes_used_by(relay.process.pid),
        "worker_on_victim": victim.name in cluster.nodes_used_by(worker.process.pid),
    }


def _past_window(stack: Stack, emails_at_failure: int) -> bool:
    return len(stack.smtp.messages) > emails_at_failure + IN_FLIGHT_WINDOW


def _seconds_until_flowing(stack: Stack, emails_at_failure: int, failed_at: float) -> float:
    """Seconds from the failure until the emails went past the in-flight window."""

    stack.wait_for(lambda: _past_window(stack, emails_at_failure), 300, "emails after the failure")
    return round(time.monotonic() - failed_at, 1)


def _prepare(cluster: RabbitCluster, victim: RabbitNode) -> None:
    # The queue's Ra metadata is saved on a timer (RabbitNode.sync_metadata explains); the
    # test is about the cluster's failover, not that window of a queue seconds old.
    victim.sync_metadata()
    cluster.move_leader(QUEUE, victim)


def _finish(stack: Stack, cluster: RabbitCluster, streams: list[Service], count: int) -> Account:
    for registrations in streams:
        assert registrations.process.wait(timeout=600) == 0
    committed = stack.committed_event_ids()
    assert len(committed) == count
    stack.wait_until_delivered(committed)
    stack.settle()
    for node in cluster.nodes:
        cluster.wait_until_member(node)
    cluster.wait_until_replicas_agree(QUEUE)
    return account(committed, stack.emails_by_event())


def test_queue_leader_killed_twice_loses_nothing(
    cluster_stack: Stack, cluster: RabbitCluster
) -> None:
    stack = cluster_stack
    per_stream = scaled(1000, 3000)
    relay, worker = _services(stack, cluster)

    failures = []
    streams = []
    # The relay's node, then the worker's (each time the other service may be elsewhere); under
    # FAULTS_LONG also a node neither is connected to.
    for role in KILL_ROLES:
        victim = _victim(cluster, relay, worker, role)
        _prepare(cluster, victim)
        where = _where(cluster, victim, relay, worker)
        streams.append(_registrations(stack, per_stream, rate=scaled(25, 50)))
        emails_at_failure = len(stack.smtp.messages)
        victim.kill()
        killed_at = time.monotonic()
        resumed_s = _seconds_until_flowing(stack, emails_at_failure, killed_at)
        new_leader = cluster.leader_of(QUEUE)
        victim.start()
        cluster.wait_until_member(victim)
        failures.append(
            {
                "victim": role,
                **where,
                "seconds_to_flowing_again": resumed_s,
                "new_leader_elsewhere": new_leader is not victim,
            }
        )
        assert new_leader is not victim
        assert streams[-1].process.wait(timeout=600) == 0

    result = _finish(stack, cluster, streams, 2 * per_stream)
    record("cluster: queue leader's node kill -9 twice", {**result.summary(), "failures": failures})
    assert result.lost == []
    assert result.unexpected == []
    assert result.extra_emails <= len(failures) * IN_FLIGHT_WINDOW
    assert relay.running
    assert worker.running


# CI freezes the worker's node; `make faults` also a node neither service is connected to.
@pytest.mark.parametrize("role", ["worker", "idle"] if LONG else ["worker"])
def test_node_frozen_30_s_loses_nothing(
    cluster_stack: Stack, cluster: RabbitCluster, role: str
) -> None:
    stack = cluster_stack
    count = scaled(2000, 4000)
    relay, worker = _services(stack, cluster)
    victim = _victim(cluster, relay, worker, role)
    cluster.move_leader(QUEUE, victim)
    where = _where(cluster, victim, relay, worker)
    # Long enough to outlast the pause: the stream goes on while the node is frozen.
    registrations = _registrations(stack, count, rate=scaled(20, 40))

    emails_at_failure = len(stack.smtp.messages)
    cluster.pause(victim)
    paused_at = time.monotonic()
    flowing_while_frozen: float | None = None
    try:
        # Frozen for 30 s whatever the services do; noting whether they got around it meanwhile.
        while time.monotonic() - paused_at < PAUSE_S:
            if flowing_while_frozen is None and _past_window(stack, emails_at_failure):
                flowing_while_frozen = round(time.monotonic() - paused_at, 1)
            time.sleep(0.2)
    finally:
        cluster.resume(victim)
    resumed_s = flowing_while_frozen or _seconds_until_flowing(stack, emails_at_failure, paused_at)
    cluster.wait_until_member(victim)

    result = _finish(stack, cluster, [registrations], count)
    record(
        f"cluster: the {role}'s node SIGSTOPped {PAUSE_S:.0f} s, holding the queue leader",
        {
            **result.summary(),
            **where,
            "seconds_to_flowing_again": resumed_s,
            "flowing_again_while_frozen": flowing_while_frozen is not None,
        },
    )
    assert result.lost == []
    assert result.unexpected == []
    assert result.extra_emails <= IN_FLIGHT_WINDOW
    assert relay.running
    assert worker.running
