"""SMTP outcomes the worker cannot be sure of, and refusals that concern the whole server.

Real broker, real worker process, a real aiosmtpd server told to misbehave. Each test counts
the copies the server accepted: the figure the contract bounds ("an uncertain SMTP outcome is
never resent at once"; "a refusal that concerns the mail server dead-letters nothing").
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from shared import topology
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import (
    TEST_RETRY_DELAYS,
    dead_letters,
    new_event,
    peek,
    publish_event,
    running_worker,
    worker_environment,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

# A command timeout far shorter than the server's late reply: before the fix, the reply to the
# final dot was waited for with this timeout too, and the worker sent the email again.
SHORT_COMMAND_TIMEOUT = {"SMTP_TIMEOUT_S": "1"}


def _queues_empty(amqp_url: str) -> bool:
    queues = [topology.QUEUE, *(topology.retry_queue_name(d) for d in TEST_RETRY_DELAYS)]
    return all(not peek(amqp_url, queue) for queue in queues)


def _copies(server: SmtpTestServer) -> Counter[str]:
    return Counter(str(m.message["X-Event-ID"]) for m in server.messages)


def test_a_reply_to_the_final_dot_later_than_the_command_timeout_gives_exactly_one_copy(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    smtp_server.reply_late(3.0)  # stores at once, answers 250 three command timeouts later
    events = [new_event(f"late{i}") for i in range(2)]
    with running_worker(
        amqp_url, smtp_server.environment(), tmp_path, **SHORT_COMMAND_TIMEOUT
    ) as worker:
        for event in events:
            publish_event(amqp_url, event)
        # Done either way: both recorded as sent, or (before the fix) retried to the DLQ.
        wait_until(
            lambda: (
                (
                    worker.log().count("welcome email sent") == len(events)
                    and _queues_empty(amqp_url)
                )
                or len(dead_letters(amqp_url)) == len(events)
            ),
            timeout_s=120,
            what="both events to be settled",
        )
    copies = _copies(smtp_server)
    print(f"copies per event: {dict(copies)}")
    assert copies == Counter({event.event_id: 1 for event in events})
    assert dead_letters(amqp_url) == []


def test_a_server_that_stores_then_drops_the_connection_gets_at_most_two_copies(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    smtp_server.drop_after_storing()
    event = new_event("dropped")
    extra = {**SHORT_COMMAND_TIMEOUT, "WORKER_UNCERTAIN_RESEND_AFTER_S": "1"}
    with running_worker(amqp_url, smtp_server.environment(), tmp_path, **extra) as worker:
        publish_event(amqp_url, event)
        wait_until(lambda: len(dead_letters(amqp_url)) == 1, timeout_s=120, what="the dead letter")
        print(f"copies before replay: {dict(_copies(smtp_server))}")
        assert _copies(smtp_server)[event.event_id] <= 2
        [dead] = dead_letters(amqp_url)
        assert dead.headers["dead-letter-reason"] == "uncertain"
        assert dead.headers["error-type"] == "UncertainDelivery"
        assert "may have been sent" in worker.log()

        # A replay must not send a third copy: the record says it may be out twice already.
        env = worker_environment(amqp_url, smtp_server.environment(), tmp_path / "cli.sqlite3")
        replay = subprocess.run(
            [sys.executable, "-m", "email_consumer", "dlq", "replay"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert replay.returncode == 0, replay.stderr
        wait_until(
            lambda: "not sending it again" in worker.log() and _queues_empty(amqp_url),
            timeout_s=60,
            what="the replayed event to be recognised",
        )
    copies = _copies(smtp_server)
    print(f"copies after replay: {dict(copies)}")
    assert copies == Counter({event.event_id: 2})
    assert dead_letters(amqp_url) == []


def test_a_server_refusing_every_sender_dead_letters_nothing_and_delivers_all_once_fixed(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    smtp_server.refuse_sender("530 5.7.0 Authentication required")  # no SMTP_USERNAME set
    events = [new_event(f"user{i}") for i in range(6)]
    probe = {"WORKER_BREAKER_PROBE_S": "2"}
    with running_worker(amqp_url, smtp_server.environment(), tmp_path, **probe) as worker:
        for event in events:
            publish_event(amqp_url, event)
        # Every event settled at least twice (or, before the fix, dead-lettered once).
        wait_until(
            lambda: (
                worker.log().count("event parked for a delayed retry") >= 2 * len(events)
                or worker.log().count("event dead-lettered") >= len(events)
            ),
            timeout_s=120,
            what="every event to meet the refusal",
        )
        print(f"events dead-lettered: {len(dead_letters(amqp_url))} of {len(events)}")
        assert dead_letters(amqp_url) == [], "a server-wide refusal must dead-letter nothing"
        assert "mail server refuses" in worker.log()

        fixed_at = time.monotonic()
        smtp_server.refuse_sender(None)
        smtp_server.wait_for(len(events), timeout_s=120)
        wait_until(lambda: _queues_empty(amqp_url), what="the queues to drain")
        print(f"time to recover: {time.monotonic() - fixed_at:.1f} s")
        wait_until(lambda: "mail server accepts again" in worker.log(), what="the breaker")
    assert _copies(smtp_server) == Counter({event.event_id: 1 for event in events})
    assert dead_letters(amqp_url) == []


def test_a_server_refusing_every_recipient_stops_dead_lettering_after_the_threshold(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    # A 550 to RCPT TO looks like the recipient's fault; for every recipient alike it is not.
    smtp_server.refuse_recipients("550 5.7.1 Relay access denied")
    events = [new_event(f"relay{i}") for i in range(8)]
    breaker = {"WORKER_BREAKER_THRESHOLD": "3", "WORKER_BREAKER_PROBE_S": "2"}
    with running_worker(amqp_url, smtp_server.environment(), tmp_path, **breaker) as worker:
        for event in events:
            publish_event(amqp_url, event)
        wait_until(
            lambda: (
                worker.log().count("event parked for a delayed retry") >= 2 * len(events)
                or len(dead_letters(amqp_url)) == len(events)
            ),
            timeout_s=120,
            what="the events to be parked or dead-lettered",
        )
        dead = {m.properties.message_id for m in dead_letters(amqp_url)}
        print(f"events dead-lettered: {len(dead)} of {len(events)}")
        assert len(dead) == 2, "only the refusals before the breaker opened (threshold - 1)"
        assert "mail server refuses every message" in worker.log()

        smtp_server.refuse_recipients(None)
        smtp_server.wait_for(len(events) - len(dead), timeout_s=120)
        wait_until(lambda: _queues_empty(amqp_url), what="the queues to drain")
    expected = {event.event_id: 1 for event in events if event.event_id not in dead}
    assert _copies(smtp_server) == Counter(expected)
    assert {m.properties.message_id for m in dead_letters(amqp_url)} == dead
