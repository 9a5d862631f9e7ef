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
# Room for the broker's own at-least-once dead-lettering, which sends a refused copy again on a
# timer of its own (minutes, not seconds), in case it took the copy (see below). Not measured.
_BROKER_RETRY_S = 240.0


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
        wait_until(
            lambda: len(dead_letters(amqp_url)) == 1,
            timeout_s=_BROKER_RETRY_S,
            what=f"the copy in the DLQ; worker log:\n{worker.log()[-3000:]}",
        )
        wait_until(lambda: ready_count(amqp_url, topology.QUEUE) == 0, what="the queue to drain")
        log = worker.log()
    sent = [email.message["X-Event-ID"] for email in smtp_server.messages]
    assert sorted(sent) == sorted(event.event_id for event in before + after)  # once each
    [dead] = dead_letters(amqp_url)
    assert dead.properties.message_id == "not-json"
    # Moved by the worker, saying why. On a slow machine the refusals can use up the queue's
    # delivery limit before the policy is lifted (each connection takes 3 of the 10); then the
    # broker dead-letters it itself, at least once, retrying the refused copy on its own timer.
    broker_reasons = [str(death.get("reason")) for death in dead.headers.get("x-death", [])]
    assert dead.headers.get("dead-letter-reason") == "malformed" or (
        "delivery_limit" in broker_reasons
    ), dead.headers
    assert log.count('"broker connected"') >= 2, log[-4000:]
