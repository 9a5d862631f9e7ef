"""The broker users of docker-compose.yml can run the real commands, and only as themselves.

The default suite needs no Docker engine (tests/compose runs the stack itself, where one
answers), so this test rebuilds, in its private virtual host, what the compose broker loads from
docker/rabbitmq/definitions.json: the topology, declared by the operator account, and the
users `producer` and `email_worker` with exactly the permissions the file gives them (renamed
per test, since users are global on the shared broker) and the demo passwords that
docker-compose.yml passes the services. Then the commands run as those users.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pika
import pytest

from shared import topology
from shared.events import serialise
from tests.support.broker import BrokerAdmin
from tests.support.compose import DEFINITIONS_FILE, environment_of, load_services
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import dead_letters, new_event, peek, publish, running_worker

pytestmark = pytest.mark.broker

# The delays docker-compose.yml leaves at their default; definitions.json declares their queues.
COMPOSE_RETRY_DELAYS_S = "5,30,300"


@dataclass(frozen=True)
class ComposeUsers:
    producer_url: str
    worker_url: str


def _definitions() -> dict[str, Any]:
    document = json.loads(DEFINITIONS_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _declare_definitions_topology(admin_url: str, definitions: dict[str, Any]) -> None:
    """Declare the exchanges, queues and bindings of the definitions file, as the broker would."""
    connection = pika.BlockingConnection(pika.URLParameters(admin_url))
    try:
        channel = connection.channel()
        for exchange in definitions.get("exchanges", []):
            channel.exchange_declare(
                exchange["name"],
                exchange_type=exchange["type"],
                durable=exchange["durable"],
                auto_delete=exchange["auto_delete"],
                internal=exchange.get("internal", False),
                arguments=exchange.get("arguments") or None,
            )
        for queue in definitions.get("queues", []):
            channel.queue_declare(
                queue["name"],
                durable=queue["durable"],
                auto_delete=queue["auto_delete"],
                arguments=queue.get("arguments") or None,
            )
        for binding in definitions.get("bindings", []):
            assert binding["destination_type"] == "queue", binding
            channel.queue_bind(
                binding["destination"],
                binding["source"],
                routing_key=binding["routing_key"],
                arguments=binding.get("arguments") or None,
            )
    finally:
        connection.close()


def _service_login(service: str) -> tuple[str, str]:
    """The (user, password) a compose service connects as, with the demo defaults."""
    url = urlsplit(environment_of(load_services()[service])["AMQP_URL"])
    return unquote(url.username or ""), unquote(url.password or "")


@pytest.fixture
def compose_users(broker_admin: BrokerAdmin, vhost: str, amqp_url: str) -> Iterator[ComposeUsers]:
    definitions = _definitions()
    _declare_definitions_topology(amqp_url, definitions)
    permissions = {entry["user"]: entry for entry in definitions["permissions"]}
    created: list[str] = []
    urls: dict[str, str] = {}
    try:
        for service in ("relay", "worker"):
            user, password = _service_login(service)
            grant = permissions[user]
            renamed = f"{user}-{uuid.uuid4().hex[:8]}"
            broker_admin.ctl("add_user", renamed, password)
            created.append(renamed)
            broker_admin.ctl(
                "set_permissions",
                "-p",
                vhost,
                renamed,
                grant["configure"],
                grant["write"],
                grant["read"],
            )
            parts = urlsplit(amqp_url)
            netloc = f"{quote(renamed, safe='')}:{quote(password, safe='')}@{parts.hostname}"
            if parts.port:
                netloc += f":{parts.port}"
            urls[service] = urlunsplit(parts._replace(netloc=netloc))
        yield ComposeUsers(producer_url=urls["relay"], worker_url=urls["worker"])
    finally:
        for user in created:
            broker_admin.ctl("delete_user", user, check=False)


def _run(
    module: str, amqp_url: str, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "PRODUCER_DATABASE_URL": f"sqlite:///{tmp_path / 'producer.sqlite3'}",
        "CONSUMER_DATABASE_URL": f"sqlite:///{tmp_path / 'consumer.sqlite3'}",
        "RETRY_DELAYS_S": COMPOSE_RETRY_DELAYS_S,
        "LOG_FORMAT": "json",
    }
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_producer_user_can_register_and_relay(
    compose_users: ComposeUsers, amqp_url: str, tmp_path: Path
) -> None:
    registered = _run(
        "producer_service",
        compose_users.producer_url,
        tmp_path,
        "register",
        "alice",
        "alice@example.com",
        "--json",
    )
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout)["published"], (
        f"register could not publish as the compose producer user:\n{registered.stderr[-3000:]}"
    )
    assert len(peek(amqp_url, topology.QUEUE)) == 1

    relayed = _run("producer_service", compose_users.producer_url, tmp_path, "relay", "--once")
    assert relayed.returncode == 0, relayed.stderr
    assert "0 failed" in relayed.stdout, relayed.stdout


def test_the_worker_user_can_deliver_dead_letter_and_replay(
    compose_users: ComposeUsers,
    amqp_url: str,
    smtp_server: SmtpTestServer,
    tmp_path: Path,
) -> None:
    # The events come from the operator account here, so this test needs only the worker user.
    event = new_event("bob")
    publish(amqp_url, serialise(event), message_id=event.event_id, retry_delays=())
    # A message that can never succeed must reach the DLQ.
    publish(amqp_url, b"not json", message_id="not-json", retry_delays=())

    with running_worker(
        compose_users.worker_url,
        smtp_server.environment(),
        tmp_path / "worker",
        RETRY_DELAYS_S=COMPOSE_RETRY_DELAYS_S,
    ) as worker:
        received = smtp_server.wait_for(1)
        wait_until(lambda: len(dead_letters(amqp_url)) == 1, what="the bad message in the DLQ")
        assert "ACCESS_REFUSED" not in worker.log()
    assert [email.envelope_to for email in received] == [("bob@example.com",)]

    listed = _run("email_consumer", compose_users.worker_url, tmp_path, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 1, listed.stdout

    replayed = _run("email_consumer", compose_users.worker_url, tmp_path, "dlq", "replay")
    assert replayed.returncode == 0, replayed.stderr
    assert dead_letters(amqp_url) == []
    assert len(peek(amqp_url, topology.QUEUE)) == 1

    purged = _run("email_consumer", compose_users.worker_url, tmp_path, "dlq", "purge", "--yes")
    assert purged.returncode == 0, purged.stderr
