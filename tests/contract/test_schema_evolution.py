"""How a version-1 consumer treats a newer producer (docs/CONTRACT.md, "Evolution"), checked
on the real worker with a real broker and SMTP server: an unknown extra field is ignored and
the email sent; schema_version 2 goes to the DLQ at once, saying so, and sends nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared import topology
from shared.events import UNSUPPORTED_SCHEMA_VERSION, to_dict
from tests.support.broker import ready_count
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import dead_letters, new_event, publish, running_worker

pytestmark = pytest.mark.broker


def test_an_extra_field_is_ignored_and_version_2_is_dead_lettered(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    extended = to_dict(new_event("carol", "Carol Extra"))
    extended["source"] = "signup-form"
    extended["data"]["locale"] = "fr"
    newer = {**to_dict(new_event("victor", "Victor Two")), "schema_version": 2}
    with running_worker(amqp_url, smtp_server.environment(), tmp_path):
        publish(amqp_url, json.dumps(newer).encode(), message_id=newer["event_id"])
        publish(amqp_url, json.dumps(extended).encode(), message_id=extended["event_id"])
        [email] = smtp_server.wait_for(1)
        wait_until(lambda: len(dead_letters(amqp_url)) == 1, what="the version 2 dead letter")
        wait_until(lambda: ready_count(amqp_url, topology.QUEUE) == 0, what="the queue to drain")
    assert email.message["X-Event-ID"] == extended["event_id"]
    assert email.envelope_to == ("carol@example.com",)
    assert len(smtp_server.messages) == 1  # nothing for the version 2 event
    [parked] = dead_letters(amqp_url)
    assert parked.properties.message_id == newer["event_id"]
    assert json.loads(parked.body) == newer  # kept as it came, for a replay after an upgrade
    assert parked.headers["error-type"] == "UnsupportedSchemaVersion"
    assert parked.headers["error-message"].startswith(f"{UNSUPPORTED_SCHEMA_VERSION} 2")
    assert parked.headers["dead-letter-reason"] == "malformed"
    assert parked.headers["attempts"] == 1
