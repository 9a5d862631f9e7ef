"""Copies the broker refuses (basic.nack) end the worker's connection, and nothing is lost.

RabbitMQ 3.10 can refuse every publish of a channel opened during a quorum queue's leader
election, for as long as the channel lives (docs/RELIABILITY.md). That window cannot be hit on
demand, so a policy makes the broker refuse the same way, for as long as the test wants
(`BrokerAdmin.refusing_publishes`): the DLQ refuses every dead-letter copy. The worker must
keep the original, move to a new connection after a few refusals in a row, go on sending the
other events, and dead-letter the original with its reason once the DLQ takes it again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from email_consumer.settlement import REFUSALS_BEFORE_RECONNECT
from shared import topology
from tests.support.broker import BrokerAdmin, ready_count
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import dead_letters, new_event, publish, publish_event, running_worker

pytestmark = pytest.mark.broker

_REFUSED = f"refused {REFUSALS_BEFORE_RECONNECT} copies in a row"


def test_a_refusing_broker_ends_the_connection_and_the_copy_lands_once_it_accepts(
    broker_admin: BrokerAdmin,
    vhost: str,
    amqp_url: str,
    smtp_server: SmtpTestServer,
    tmp_path: Path,
) -> None:
    before = [new_event(f"before{i}") for i in range(3)]
    after = [new_event(f"after{i}") for i in range(3)]
    with running_worker(amqp_url, smtp_server.environment(), tmp_path) as worker:
        with broker_admin.refusing_publishes(vhost, topology.DEAD_LETTER_QUEUE):
            for event in before:
                publish_event(amqp_url, event)
            publish(amqp_url, b"not json", message_id="not-json")
            for event in after:
                publish_event(amqp_url, event)
            smtp_server.wait_for(len(before) + len(after))
            wait_until(
                lambda: _REFUSED in worker.log(), what="the worker to give up its connection"
            )
            assert dead_letters(amqp_url) == []  # every copy so far was refused
        wait_until(lambda: len(dead_letters(amqp_url)) == 1, what="the copy in the DLQ")
        wait_until(lambda: ready_count(amqp_url, topology.QUEUE) == 0, what="the queue to drain")
        log = worker.log()
    sent = [email.message["X-Event-ID"] for email in smtp_server.messages]
    assert sorted(sent) == sorted(event.event_id for event in before + after)  # once each
    [dead] = dead_letters(amqp_url)
    assert dead.properties.message_id == "not-json"
    # Moved by the worker, saying why: not by the broker's delivery limit, which says nothing.
    assert dead.headers["dead-letter-reason"] == "malformed"
    assert log.count('"broker connected"') >= 2, log[-4000:]
