"""Every command given a cluster's three URLs succeeds while the first node listed is down.

The first URL written is not necessarily the first tried (each process shuffles the list);
tests/integration/test_broker_failover.py covers every position of the dead node, this test
covers each real command against a real cluster with one member killed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import TEST_TIMEOUT_S, Stack
from tests.support.cluster import RabbitCluster
from tests.support.smtp import SmtpTestServer

pytestmark = [pytest.mark.private_node, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT_S + 900)]


@pytest.fixture
def stack_with_first_node_down(smtp_server: SmtpTestServer, tmp_path: Path) -> Iterator[Stack]:
    cluster = RabbitCluster(3)
    system = Stack(
        node=cluster.nodes[1],
        smtp=smtp_server,
        folder=tmp_path,
        extra_env={"AMQP_URL": cluster.amqp_urls},
    )
    try:
        cluster.start()
        cluster.nodes[0].kill()
        yield system
    finally:
        system.stop_all()
        cluster.destroy()


def _succeeds(stack: Stack, *argv: str) -> str:
    result = stack.run(*argv)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stderr[-3000:]}"
    assert "cannot connect" not in result.stderr
    return result.stderr


def test_each_command_fails_over_to_a_node_that_answers(stack_with_first_node_down: Stack) -> None:
    stack = stack_with_first_node_down
    # register publishes at once: "not published yet" would mean it fell back on the relay.
    assert "not published" not in _succeeds(
        stack, "producer-service", "register", "ann", "ann@example.com"
    )
    _succeeds(stack, "producer-service", "simulate", "--count", "5")
    _succeeds(stack, "producer-service", "relay", "--once")
    committed = stack.committed_event_ids()
    assert len(committed) == 6

    worker = stack.start_worker()
    stack.wait_for(lambda: set(committed) <= set(stack.emails_by_event()), 180, "six emails")
    assert worker.terminate() == 0

    _succeeds(stack, "email-consumer", "dlq", "list")
    _succeeds(stack, "email-consumer", "dlq", "replay")
    _succeeds(stack, "email-consumer", "dlq", "migrate")
    _succeeds(stack, "email-consumer", "dlq", "purge", "--yes")
