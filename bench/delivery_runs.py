"""One delivery run: a queue filled beforehand, a worker started, emails counted at the sink.

The project's worker and the peers (Dramatiq, FastStream) are all measured the same way: the
events are already in the queue when the worker starts, so the figure is how fast the worker
empties it. The first share of the emails (start-up, connections being opened) is left out of
the rate.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import dramatiq
import pika

from bench import faststream_peer
from bench.broker_setup import declare_contract_topology
from bench.dramatiq_peer import ACTOR_NAME, QUEUE_NAME, build_actor
from bench.pipelined import publish_pipelined
from bench.processes import Service, process_tree_cpu_s, python_command, running
from bench.sink import Accepted, MailServer, SmtpSink
from bench.workload import make_events, payload, wire_messages
from email_consumer.settings import ConsumerSettings
from shared.settings import Environment

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    emails_per_s: float
    cpu_ms_per_email: float
    """CPU time of the worker's process tree per email after the warm-up: moved far less than
    the rate by other work on the machine."""
    delivered: int
    distinct: int
    exit_code: int | None


def rate_after_warmup(records: list[Accepted], warmup_fraction: float) -> float:
    """Emails per second between the first accept after the warm-up share and the last."""
    times = sorted(record.accepted_at for record in records)
    skip = min(int(len(times) * warmup_fraction), max(len(times) - 2, 0))
    window = times[skip:]
    if len(window) < 2 or window[-1] <= window[0]:
        raise RuntimeError(f"too few emails to time ({len(times)})")
    return (len(window) - 1) / (window[-1] - window[0])


def worker_environment(
    amqp_url: str, sink: MailServer, concurrency: int | None, database: Path, log_level: str
) -> dict[str, str]:
    """The variables the worker reads (CONTRACT.md and email_consumer/settings.py); with
    `concurrency` None, WORKER_CONCURRENCY is left to its default."""
    env = {
        "AMQP_URL": amqp_url,
        **sink.environment(),
        "CONSUMER_DATABASE_URL": f"sqlite:///{database}",
        "LOG_LEVEL": log_level,
        "LOG_FORMAT": "json",
        "METRICS_PORT": "0",
    }
    if concurrency is not None:
        env["WORKER_CONCURRENCY"] = str(concurrency)
    return env


def worker_default_concurrency() -> int:
    """WORKER_CONCURRENCY when it is not set, as the worker's own settings read it."""
    return ConsumerSettings.from_env(Environment({})).worker.concurrency


def preload_worker_queue(amqp_url: str, count: int, tag: str) -> None:
    declare_contract_topology(amqp_url)
    publish_pipelined(amqp_url, wire_messages(make_events(count, tag=tag)))


def preload_dramatiq_queue(amqp_url: str, count: int, tag: str) -> None:
    """Dramatiq's own messages in its queue: the first through `send` (which declares the
    queues), the rest pipelined, since only consuming is measured here."""
    documents = [payload(event) for event in make_events(count, tag=tag)]
    actor = build_actor(amqp_url, confirm_delivery=True)
    try:
        actor.send(documents[0])
    finally:
        actor.broker.close()
    properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    messages = [
        (
            dramatiq.Message(
                queue_name=QUEUE_NAME,
                actor_name=ACTOR_NAME,
                args=(document,),
                kwargs={},
                options={},
            ).encode(),
            properties,
        )
        for document in documents[1:]
    ]
    if messages:
        publish_pipelined(amqp_url, messages, exchange="", routing_key=QUEUE_NAME)


def preload_faststream_queue(amqp_url: str, count: int, tag: str) -> None:
    """FastStream's JSON messages in its queue: the queue declared through FastStream, the
    messages pipelined (only consuming is measured here)."""

    async def declare() -> None:
        broker = await faststream_peer.open_publisher(amqp_url)
        await broker.stop()

    asyncio.run(declare())
    properties = pika.BasicProperties(
        delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json"
    )
    messages = [
        (json.dumps(payload(event)).encode(), properties) for event in make_events(count, tag=tag)
    ]
    publish_pipelined(amqp_url, messages, exchange="", routing_key=faststream_peer.QUEUE_NAME)


def start_worker(env: dict[str, str], log_dir: Path, name: str) -> AbstractContextManager[Service]:
    return running(name, python_command("email_consumer", "run"), env, log_dir)


def start_dramatiq(
    amqp_url: str, sink: MailServer, concurrency: int | None, log_dir: Path, name: str
) -> AbstractContextManager[Service]:
    """The Dramatiq command: one process of `concurrency` threads, or, with None, as it starts
    with no options (a process per CPU, eight threads each)."""
    env = {
        "BENCH_AMQP_URL": amqp_url,
        **sink.environment(),
        "PYTHONPATH": str(REPO_ROOT),
    }
    command = [sys.executable, "-m", "dramatiq", "bench.dramatiq_peer:configure"]
    if concurrency is not None:
        command += ["--processes", "1", "--threads", str(concurrency)]
    return running(name, command, env, log_dir)


def start_faststream(
    amqp_url: str, sink: MailServer, concurrency: int | None, log_dir: Path, name: str
) -> AbstractContextManager[Service]:
    """The FastStream subscriber: a prefetch of `concurrency`, or, with None, its default (none)."""
    env = {
        "BENCH_AMQP_URL": amqp_url,
        **sink.environment(),
        "BENCH_PREFETCH": "" if concurrency is None else str(concurrency),
        "PYTHONPATH": str(REPO_ROOT),
    }
    return running(name, python_command("bench.faststream_peer"), env, log_dir)


def measure(
    service_starter: Callable[[], AbstractContextManager[Service]],
    sink: SmtpSink,
    count: int,
    warmup_fraction: float,
    timeout_s: float,
) -> DeliveryResult:
    """Start the service, wait for `count` emails, stop it; the rate after the warm-up."""
    sink.take()
    warmup = min(max(int(count * warmup_fraction), 1), count - 1)
    with service_starter() as service:
        sink.wait_for(warmup, timeout_s, alive=service.check_alive)
        cpu_before, done_before = process_tree_cpu_s(service.pid), sink.count
        sink.wait_for(count, timeout_s, alive=service.check_alive)
        cpu_after, done_after = process_tree_cpu_s(service.pid), sink.count
        exit_code = service.stop()
    records = sink.take()
    return DeliveryResult(
        emails_per_s=rate_after_warmup(records, warmup_fraction),
        cpu_ms_per_email=(cpu_after - cpu_before) * 1000 / max(done_after - done_before, 1),
        delivered=len(records),
        distinct=len({record.event_id for record in records}),
        exit_code=exit_code,
    )
