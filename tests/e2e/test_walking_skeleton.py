"""The walking skeleton as a user runs it: `producer-service register` with `email-consumer run`
in the background delivers exactly one welcome email; registering again is a conflict."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from shared import topology
from tests.support.broker import ready_count
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import dead_letters, running_worker

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _register(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["producer-service", "register", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_register_delivers_one_welcome_email_and_a_second_register_is_a_conflict(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    producer_env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "PRODUCER_DATABASE_URL": f"sqlite:///{tmp_path / 'producer.sqlite3'}",
        "LOG_FORMAT": "json",
    }
    with running_worker(amqp_url, smtp_server.environment(), tmp_path):
        first = _register(
            producer_env, "alice", "alice@example.com", "--full-name", "Alice Liddell", "--json"
        )
        assert first.returncode == 0, first.stderr
        event_id = json.loads(first.stdout)["event_id"]

        [email] = smtp_server.wait_for(1)
        assert email.envelope_to == ("alice@example.com",)
        assert email.message["To"] == "Alice Liddell <alice@example.com>"
        assert email.message["Subject"] == "Welcome, Alice Liddell!"
        assert email.message["X-Event-ID"] == event_id

        again = _register(
            producer_env, "alice", "alice@example.com", "--full-name", "Alice Liddell", "--json"
        )
        assert again.returncode == 3
        assert again.stdout == ""
        assert len(again.stderr.strip().splitlines()) == 1, again.stderr

        wait_until(lambda: ready_count(amqp_url, topology.QUEUE) == 0, what="the queue to drain")
    assert len(smtp_server.messages) == 1
    assert dead_letters(amqp_url) == []
