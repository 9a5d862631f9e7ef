"""Helpers shared by the registration service's integration tests (this module has no tests).

They run `producer-service` as a user would (a subprocess, configured by environment variables),
read the broker with plain pika and the database with SQLAlchemy, so the tests check the system
from the outside.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pika
import sqlalchemy as sa

from shared.database import create_database_engine
from shared.topology import EXCHANGE, QUEUE, ROUTING_KEY

COMMAND = "producer-service"


def producer_env(amqp_url: str, database_url: str, **extra: str) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AMQP_", "PRODUCER_", "RELAY_", "LOG_"))
    }
    environment.update(
        {
            "AMQP_URL": amqp_url,
            "PRODUCER_DATABASE_URL": database_url,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            **extra,
        }
    )
    return environment


def run_producer(
    *args: str, env: dict[str, str], timeout_s: float = 120.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def start_producer(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [COMMAND, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def queue_event(database_url: str, username: str) -> str:
    """Register while the broker is 'down', so only the relay can publish the event; returns
    the event id."""
    result = run_producer(
        "register",
        username,
        f"{username}@example.com",
        env=producer_env(closed_port_url(), database_url),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def set_binding(amqp_url: str, *, bound: bool) -> None:
    """Bind or unbind the worker's queue from the events exchange: unbound, every event the
    relay publishes is returned as unroutable."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        if bound:
            channel.queue_bind(QUEUE, EXCHANGE, routing_key=ROUTING_KEY)
        else:
            channel.queue_unbind(QUEUE, EXCHANGE, routing_key=ROUTING_KEY)
    finally:
        connection.close()


def closed_port_url() -> str:
    """An AMQP URL where nothing listens: the broker is 'down'."""
    from tests.support.ports import free_port

    return f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"


@dataclass(frozen=True)
class Received:
    properties: pika.BasicProperties
    body: dict[str, Any]


def drain_queue(amqp_url: str, queue: str = QUEUE) -> list[Received]:
    """Take every ready message off `queue` (acking it) and return them in order."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    received: list[Received] = []
    try:
        channel = connection.channel()
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return received
            received.append(Received(properties, json.loads(body)))
    finally:
        connection.close()


def read_table(database_url: str, query: str) -> list[sa.Row[Any]]:
    engine = create_database_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.text(query)))
    finally:
        engine.dispose()


def outbox_rows(database_url: str) -> list[sa.Row[Any]]:
    return read_table(
        database_url,
        "SELECT id, event_id, published_at, attempts, last_error, claim_token FROM outbox "
        "ORDER BY id",
    )


def user_count(database_url: str) -> int:
    return int(read_table(database_url, "SELECT count(*) FROM users")[0][0])


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """The structured log lines of a run (other stderr lines are skipped)."""
    lines = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def message_ids(received: Sequence[Received]) -> list[str]:
    return [str(message.properties.message_id) for message in received]
