"""The broker's consumer timeout: a delivery held past it costs a redelivery, never an email.

RabbitMQ closes the channel of a consumer that holds a delivery unacknowledged for longer than
`consumer_timeout` (30 minutes by default; 3.10 and 4.0 close the channel with
PRECONDITION_FAILED, 4.3+ quorum queues return the message instead). The worker keeps its own
budget far below it (retry_policy.py); this test makes the broker's timeout shorter than one
slow send, on a private node of the version under test (TEST_RABBITMQ_ROOT for 4.0), and checks
that the worker comes back consuming and that the event is sent exactly once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import topology
from tests.support.broker import ready_count
from tests.support.rabbit_node import RabbitNode
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import dead_letters, new_event, publish_event, running_worker

pytestmark = [pytest.mark.private_node, pytest.mark.slow]

CONSUMER_TIMEOUT_MS = 2000
# The channel checks its deliveries' age on this tick (default 60 s).
TICK_CONFIG = "[{rabbit, [{channel_tick_interval, 500}]}].\n"


def test_a_send_slower_than_the_consumer_timeout_is_delivered_once(tmp_path: Path) -> None:
    node = RabbitNode(
        extra_config=f"consumer_timeout = {CONSUMER_TIMEOUT_MS}", advanced_config=TICK_CONFIG
    )
    smtp = SmtpTestServer()
    smtp.start()
    try:
        node.start()
        # Four timeouts long: the broker gives up on the delivery while the email is on its way.
        smtp.set_latency(4 * CONSUMER_TIMEOUT_MS / 1000)
        with running_worker(
            node.amqp_url, smtp.environment(), tmp_path, SMTP_TIMEOUT_S="20"
        ) as worker:
            event = new_event()
            publish_event(node.amqp_url, event)
            smtp.wait_for(1, timeout_s=60)
            wait_until(
                lambda: worker.log().count('"consuming"') >= 2,
                timeout_s=60,
                what="the worker consuming again after the broker closed its channel",
            )
            smtp.set_latency(0)
            wait_until(
                lambda: (
                    ready_count(node.amqp_url, topology.QUEUE) == 0
                    and all(
                        ready_count(node.amqp_url, topology.retry_queue_name(d)) == 0
                        for d in (1, 2)
                    )
                ),
                timeout_s=60,
                what="the redelivered event settled",
            )
        assert [m.message["X-Event-ID"] for m in smtp.messages] == [event.event_id]
        assert dead_letters(node.amqp_url) == []
    finally:
        smtp.stop()
        node.destroy()
