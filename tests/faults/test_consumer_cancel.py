"""The broker cancels the worker's consumer (basic.cancel): here the queue is deleted under it.

pika then forgets the consumer and the connection stays open, so a worker that only polls the
connection would go on running and never receive anything again. It must subscribe again on
the same connection (declaring the queue anew) and deliver what is registered afterwards.

RabbitMQ 4.0 sends the basic.cancel before the deleted queue is gone: a declaration right after
it can still find the dying queue, and the binding or basic.consume that follows then gets 404
NOT_FOUND (reproduced with plain pika on 4.0.5: 2 of 5 tries, 2026-12-01). The worker then
reconnects, declares and consumes again; that one reconnect, for that reason, is allowed there.
"""

from __future__ import annotations

import pytest

from shared.topology import QUEUE
from tests.faults.harness import TEST_TIMEOUT_S, Stack, account
from tests.support.rabbit_install import configured_install

pytestmark = [pytest.mark.private_node, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT_S)]


def _register(stack: Stack, count: int) -> None:
    result = stack.run("producer-service", "simulate", "--count", str(count))
    assert result.returncode == 0, result.stderr


def test_a_deleted_and_redeclared_queue_is_consumed_again(stack: Stack) -> None:
    stack.start_relay()
    worker = stack.start_worker()
    _register(stack, 20)
    before = stack.committed_event_ids()
    assert stack.wait_until_delivered(before, timeout_s=120) < 120

    stack.node.rabbitmqctl("delete_queue", QUEUE)
    stack.wait_for(
        lambda: "subscribing again" in worker.output(), 60, "the worker to subscribe again"
    )
    _register(stack, 20)
    after = [event for event in stack.committed_event_ids() if event not in set(before)]
    stack.wait_until_delivered(after, timeout_s=120)

    result = account(after, stack.emails_by_event())
    assert result.lost == []
    assert worker.running
    output = worker.output()
    reconnects = output.count("broker connection lost")
    if configured_install().in_own_root:
        assert reconnects <= 1, output[-3000:]
        if reconnects:
            assert f"NOT_FOUND - no queue '{QUEUE}'" in output, output[-3000:]
    else:
        # On 3.10 the queue is gone when the cancel arrives: handled on the same connection.
        assert reconnects == 0, output[-3000:]
    assert output.count('"consuming"') == 1 + reconnects
