"""Helpers for the worker's integration tests (no tests here): run `email-consumer run` as a
subprocess, publish events as the producer does, read the queues.

Lives beside the tests that use it because the shared `tests/support/` package belongs to the
lead; the e2e walking-skeleton test imports it too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika

from shared import topology
from shared.events import UserRegistered, new_user_registered, serialise
from tests.support.waiting import wait_until

# Short delays, so a test sees an event come back from a retry queue within seconds.
TEST_RETRY_DELAYS = (1, 2)


def new_event(username: str = "alice", full_name: str | None = "Alice Liddell") -> UserRegistered:
    return new_user_registered(
        user_id=str(uuid.uuid4()),
        username=username,
        email=f"{username}@example.com",
        full_name=full_name,
    )


def publish(
    amqp_url: str,
    body: bytes,
    *,
    message_id: str | None = None,
    correlation_id: str | None = None,
    retry_delays: tuple[int, ...] = TEST_RETRY_DELAYS,
    extra_headers: Mapping[str, Any] | None = None,
) -> None:
    """Publish one body as the producer does (CONTRACT.md properties, confirms, mandatory);
    `extra_headers` adds to its headers, as another publisher might."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        topology.declare_topology(channel, retry_delays_s=retry_delays)
        channel.confirm_delivery()
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="application/json",
            message_id=message_id,
            type="user_registered",
            app_id="producer_service",
            timestamp=int(time.time()),
            correlation_id=correlation_id or str(uuid.uuid4()),
            headers={"schema_version": 1, **(extra_headers or {})},
        )
        channel.basic_publish(
            topology.EXCHANGE, topology.ROUTING_KEY, body, properties=properties, mandatory=True
        )
    finally:
        connection.close()


def publish_event(amqp_url: str, event: UserRegistered) -> None:
    publish(amqp_url, serialise(event), message_id=event.event_id)


@dataclass(frozen=True)
class QueuedMessage:
    properties: Any
    body: bytes

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})


def peek(amqp_url: str, queue: str) -> list[QueuedMessage]:
    """Every message ready in `queue`, left in place (taken unacked, returned on close).

    Each message found counts one delivery on a quorum queue (RabbitMQ before 4.3 counts every
    return), and the main queue dead-letters at topology.DELIVERY_LIMIT: poll with
    `tests.support.broker.ready_count`, peek once to read what is there.
    """
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    messages: list[QueuedMessage] = []
    try:
        channel = connection.channel()
        count = channel.queue_declare(queue, passive=True).method.message_count
        for _ in range(count):
            method, properties, body = channel.basic_get(queue)
            if method is None:
                break
            messages.append(QueuedMessage(properties, body))
    finally:
        connection.close()
    return messages


def dead_letters(amqp_url: str) -> list[QueuedMessage]:
    return peek(amqp_url, topology.DEAD_LETTER_QUEUE)


def email_consumer_command(amqp_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`email-consumer ARGS` (the DLQ tools) against `amqp_url`, with the tests' retry delays."""
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "RETRY_DELAYS_S": ",".join(str(delay) for delay in TEST_RETRY_DELAYS),
        "LOG_FORMAT": "json",
    }
    return subprocess.run(
        [sys.executable, "-m", "email_consumer", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def patient_smtp(timeout_s: int) -> dict[str, str]:
    """Settings for a worker that waits up to `timeout_s` for every SMTP reply, the final dot's
    included, with the shortest claim lease the worker accepts for that."""
    return {
        "SMTP_TIMEOUT_S": str(timeout_s),
        "SMTP_FINAL_REPLY_TIMEOUT_S": str(timeout_s),
        # At least 11 x SMTP_TIMEOUT_S + SMTP_FINAL_REPLY_TIMEOUT_S.
        "WORKER_CLAIM_LEASE_S": str(12 * timeout_s),
    }


def worker_environment(
    amqp_url: str, smtp_env: Mapping[str, str], database_path: Path, **extra: str
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AMQP_URL": amqp_url,
            "CONSUMER_DATABASE_URL": f"sqlite:///{database_path}",
            "RETRY_DELAYS_S": ",".join(str(d) for d in TEST_RETRY_DELAYS),
            "RETRY_ATTEMPTS": "3",
            "RETRY_INITIAL_BACKOFF_S": "0.1",
            "RETRY_MAX_BACKOFF_S": "0.5",
            "RETRY_MAX_TOTAL_S": "5",
            "SMTP_TIMEOUT_S": "5",
            "WORKER_RECONNECT_MAX_DELAY_S": "2",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
        }
    )
    env.update(smtp_env)
    env.update(extra)
    return env


class WorkerProcess:
    """`email-consumer run` in a subprocess, its log (stderr) written to a file."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self._log_file = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "email_consumer", "run"],
            env=dict(env),
            stdout=self._log_file,
            stderr=self._log_file,
        )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_consuming(self, timeout_s: float = 30.0) -> None:
        wait_until(lambda: '"consuming"' in self.log(), timeout_s=timeout_s, what="worker start")

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log_file.close()


@contextmanager
def running_worker(
    amqp_url: str, smtp_env: Mapping[str, str], tmp_path: Path, **extra: str
) -> Iterator[WorkerProcess]:
    """A started worker, stopped with SIGTERM afterwards; asserts it exited 0."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = worker_environment(amqp_url, smtp_env, tmp_path / "consumer.sqlite3", **extra)
    worker = WorkerProcess(env, tmp_path / f"worker-{uuid.uuid4().hex[:6]}.log")
    try:
        worker.wait_consuming()
        yield worker
    finally:
        code = worker.stop()
    assert code == 0, f"worker exited {code}; log:\n{worker.log()[-4000:]}"


def now_utc() -> datetime:
    return datetime.now(UTC)


class LoginSmtpServer:
    """What `smtp_server_requiring_login` yields: where it listens, what it accepted."""

    def __init__(self, port: int) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.messages: list[bytes] = []

    def environment(self, username: str, password: str) -> dict[str, str]:
        return {
            "SMTP_HOST": self.host,
            "SMTP_PORT": str(self.port),
            "SMTP_USERNAME": username,
            "SMTP_PASSWORD": password,
        }

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(bytes(envelope.content))
        return "250 2.0.0 OK"


@contextmanager
def smtp_server_requiring_login(username: str, password: str) -> Iterator[LoginSmtpServer]:
    """An aiosmtpd server on 127.0.0.1 that accepts mail only after AUTH with
    `username`/`password` (over plain TCP, as on a loopback relay); records accepted messages.
    """
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    from tests.support.ports import free_port

    def authenticate(
        _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == username.encode()
            and data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False)

    recorder = LoginSmtpServer(free_port())
    controller = Controller(
        recorder,
        hostname=recorder.host,
        port=recorder.port,
        auth_required=True,
        auth_require_tls=False,
        authenticator=authenticate,
        ready_timeout=10,
    )
    controller.start()
    try:
        yield recorder
    finally:
        controller.stop()
