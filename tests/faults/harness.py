"""The system under test as a user runs it, and the Jepsen-style account of what it delivered.

A `Stack` is one private RabbitMQ node, one SMTP server and two SQLite databases in a test's
folder; the services run as the real commands (`producer-service`, `email-consumer`) in
subprocesses, so a test can SIGKILL any of them at any moment. `account` then checks every
committed registration against the emails the SMTP server accepted: delivered once, delivered
more than once, or lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import pika
import pika.exceptions
import sqlalchemy as sa

from shared.events import new_user_registered, serialise
from tests.support.rabbit_node import RabbitNode
from tests.support.smtp import SmtpTestServer

# The soak variants (make faults) run longer streams; CI runs the short ones.
LONG: Final = os.environ.get("FAULTS_LONG", "") not in ("", "0")
# Bounds only, so that a broken run fails instead of hanging; never a speed requirement.
DELIVERY_TIMEOUT_S: Final = 900.0 if LONG else 240.0
TEST_TIMEOUT_S: Final = 3600 if LONG else 300
COMMAND_TIMEOUT_S: Final = 180.0


def good_event() -> tuple[str, bytes]:
    """(event_id, body) of a valid event for a new synthetic user, for floods of good traffic."""
    event = new_user_registered(
        user_id=str(uuid.uuid4()),
        username=f"user{uuid.uuid4().hex[:8]}",
        email=f"{uuid.uuid4().hex[:8]}@example.com",
        full_name="Good Event",
    )
    return event.event_id, serialise(event)


def scaled(short: int, long: int) -> int:
    """`short` in CI, `long` under FAULTS_LONG=1 (make faults)."""
    return long if LONG else short


class Service:
    """One service command in a subprocess, its output captured to a file."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_file: Path):
        self.name = name
        self.log_file = log_file
        self._log: IO[bytes] = log_file.open("ab")
        self.stopped_on_purpose = False
        self.process = subprocess.Popen(
            argv,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no drain, as a crash or an OOM kill would end it."""
        self.stopped_on_purpose = True
        if self.running:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._log.close()

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait: the service drains and exits; returns its exit code."""
        self.stopped_on_purpose = True
        if self.running:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=30)
        self._log.close()
        return code

    def output(self) -> str:
        return self.log_file.read_text(errors="replace")


@dataclass
class Stack:
    """A private broker, an SMTP server, databases and the commands, all for one test."""

    node: RabbitNode
    smtp: SmtpTestServer
    folder: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)

    @property
    def producer_database(self) -> str:
        return f"sqlite:///{self.folder / 'producer.sqlite3'}"

    @property
    def consumer_database(self) -> str:
        return f"sqlite:///{self.folder / 'consumer.sqlite3'}"

    def environment(self, **overrides: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AMQP_", "SMTP_", "RETRY_", "WORKER_", "RELAY_"))
        }
        env.update(
            {
                "AMQP_URL": self.node.amqp_url,
                # Short heartbeats: a dead broker is noticed in seconds, not a minute.
                "AMQP_HEARTBEAT_S": "5",
                "PRODUCER_DATABASE_URL": self.producer_database,
                "CONSUMER_DATABASE_URL": self.consumer_database,
                **self.smtp.environment(),
                # The worker wants its claim lease to outlast several SMTP timeouts (it checks).
                "SMTP_TIMEOUT_S": "1",
                "SMTP_FINAL_REPLY_TIMEOUT_S": "1",
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "INFO",
                "RELAY_POLL_INTERVAL_S": "0.2",
                "WORKER_RECONNECT_MAX_DELAY_S": "2",
                "RETRY_ATTEMPTS": "3",
                "RETRY_INITIAL_BACKOFF_S": "0.1",
                "RETRY_MAX_BACKOFF_S": "0.5",
                "RETRY_MAX_TOTAL_S": "3",
                "RETRY_DELAYS_S": "1,2",
                "WORKER_CLAIM_LEASE_S": "12",
                **self.extra_env,
                **overrides,
            }
        )
        return env

    # --- commands ---------------------------------------------------------------------------
    def run(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        """A one-shot command (`producer-service register ...`, `email-consumer dlq ...`)."""
        return subprocess.run(
            [*_command(argv[0]), *argv[1:]],
            env=self.environment(**env),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )

    def start(self, name: str, *argv: str, **env: str) -> Service:
        """A long-running command (`producer-service relay`, `email-consumer run`)."""
        number = sum(1 for service in self.services if service.name == name)
        service = Service(
            name,
            [*_command(argv[0]), *argv[1:]],
            self.environment(**env),
            self.folder / f"{name}-{number}.log",
        )
        self.services.append(service)
        return service

    def start_relay(self, **env: str) -> Service:
        return self.start("relay", "producer-service", "relay", **env)

    def start_worker(self, **env: str) -> Service:
        return self.start("worker", "email-consumer", "run", **env)

    def stop_all(self) -> None:
        for service in self.services:
            if service.running:
                service.kill()

    def wait_consuming(self, worker: Service, timeout_s: float = 60) -> None:
        """Until `worker` consumes: after its whole topology, bindings included (a publish
        before the bindings is returned unroutable; seen under load when tests waited only for
        the queue to exist)."""
        self.wait_for(lambda: '"consuming"' in worker.output(), timeout_s, "the worker consuming")

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll `condition`; fail at once if a service died on its own, or after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            for service in self.services:
                if not service.running and not service.stopped_on_purpose:
                    if service.name == "simulate" and service.process.returncode == 0:
                        continue
                    raise AssertionError(
                        f"{service.name} exited ({service.process.returncode}) while waiting "
                        f"for {what}:\n{service.output()[-3000:]}"
                    )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"gave up waiting for {what} after {timeout_s:.0f} s; "
                    f"service output:\n{self.all_output()[-3000:]}"
                )
            time.sleep(0.2)

    def all_output(self) -> str:
        return "\n".join(service.output() for service in self.services)

    # --- observation ------------------------------------------------------------------------
    def committed_event_ids(self) -> list[str]:
        """Every event the producer committed, read from its outbox (the ground truth)."""
        engine = sa.create_engine(self.producer_database)
        try:
            with engine.connect() as connection:
                rows = connection.execute(sa.text("SELECT event_id FROM outbox ORDER BY id"))
                return [str(row[0]) for row in rows]
        finally:
            engine.dispose()

    def emails_by_event(self) -> Counter[str]:
        return Counter(str(email.message["X-Event-ID"]) for email in self.smtp.messages)

    def wait_until_delivered(
        self, event_ids: Iterable[str], timeout_s: float = DELIVERY_TIMEOUT_S
    ) -> float:
        """Wait until every event has at least one email; returns the seconds it took.

        A bound, not a speed requirement: it only keeps a broken run from hanging forever.
        """
        wanted = set(event_ids)
        started = time.monotonic()
        while True:
            missing = wanted - set(self.emails_by_event())
            if not missing:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                return time.monotonic() - started
            time.sleep(0.25)

    def settle(self, quiet_s: float = 3.0) -> None:
        """Wait until no new email arrived for `quiet_s`, so late duplicates are counted too."""
        count = len(self.smtp.messages)
        last_change = time.monotonic()
        while time.monotonic() - last_change < quiet_s:
            time.sleep(0.25)
            now = len(self.smtp.messages)
            if now != count:
                count, last_change = now, time.monotonic()


@dataclass(frozen=True)
class Account:
    """Jepsen's queue checker, for emails: what became of each committed registration."""

    committed: int
    once: int
    duplicated: int
    lost: list[str]
    unexpected: list[str]  # emails for events nobody registered
    extra_emails: int  # emails beyond the first, over all duplicated events

    def summary(self) -> dict[str, int]:
        return {
            "committed": self.committed,
            "delivered_once": self.once,
            "delivered_more_than_once": self.duplicated,
            "duplicate_emails": self.extra_emails,
            "lost": len(self.lost),
            "unexpected": len(self.unexpected),
        }


def account(committed: Iterable[str], emails: Counter[str]) -> Account:
    committed_ids = list(committed)
    known = set(committed_ids)
    counts = [emails.get(event_id, 0) for event_id in committed_ids]
    return Account(
        committed=len(committed_ids),
        once=sum(1 for count in counts if count == 1),
        duplicated=sum(1 for count in counts if count > 1),
        lost=[event_id for event_id, count in zip(committed_ids, counts, strict=True) if not count],
        unexpected=sorted(event_id for event_id in emails if event_id not in known),
        extra_emails=sum(count - 1 for count in counts if count > 1),
    )


def record(test_name: str, figures: Mapping[str, object]) -> None:
    """Print the run's figures (shown with `pytest -s`) and keep them for docs/RELIABILITY.md."""
    line = json.dumps({"test": test_name, **figures}, sort_keys=True)
    print(f"\nFAULT-FIGURES {line}")
    target = os.environ.get("FAULTS_FIGURES_FILE")
    if target:
        with open(target, "a", encoding="utf-8") as figures_file:
            figures_file.write(line + "\n")


def _command(name: str) -> list[str]:
    # `python -m <package>` runs the installed code with this interpreter, whatever PATH says.
    module = {"producer-service": "producer_service", "email-consumer": "email_consumer"}[name]
    return [sys.executable, "-m", module]


def queue_depth(amqp_url: str, queue: str) -> int:
    """Messages ready in `queue`, or -1 while the queue cannot be asked (no leader yet)."""
    try:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    except pika.exceptions.AMQPError:
        return -1
    try:
        declared = connection.channel().queue_declare(queue, passive=True)
        return int(declared.method.message_count)
    except pika.exceptions.AMQPError:
        return -1
    finally:
        if connection.is_open:
            connection.close()
