"""The outbox relay, measured apart from registration.

First N users are registered through the producer's own use case (its composition root,
`producer_service.bootstrap`), which leaves N events pending in the outbox; that is timed on
its own. Then one `run_once()` of the relay drains them (claim, publish with confirms,
mandatory, persistent, mark published) and only that is the relay's figure. Every event must
then be in the worker's queue.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.broker_setup import declare_contract_topology
from bench.logs import quiet_pika
from bench.processes import Service, python_command, running
from bench.tracing_sink import tracing_variables
from shared.settings import Environment
from shared.topology import QUEUE
from tests.support.broker import ready_count


def producer_environment(amqp_url: str, database: Path, log_level: str) -> dict[str, str]:
    """The variables the registration service reads (CONTRACT.md, producer_service/settings)."""
    return {
        "AMQP_URL": amqp_url,
        "PRODUCER_DATABASE_URL": f"sqlite:///{database}",
        "LOG_LEVEL": log_level,
        "LOG_FORMAT": "json",
    }


def start_relay(
    env: Mapping[str, str], log_dir: Path, name: str
) -> AbstractContextManager[Service]:
    """`producer-service relay` running until the block ends."""
    return running(name, python_command("producer_service", "relay"), env, log_dir)


@dataclass(frozen=True, slots=True)
class RelayResult:
    events_per_s: float
    parameters: dict[str, Any]


def measure_relay(amqp_url: str, count: int, workdir: Path, name: str = "relay") -> RelayResult:
    """Register `count` users, then time one relay pass that publishes their events; `name`
    tells apart the databases of several measurements in one `workdir`."""
    from producer_service.bootstrap import bootstrap

    declare_contract_topology(amqp_url)
    env = producer_environment(amqp_url, workdir / f"producer-{name}.sqlite3", "WARNING")
    # With `--tracing`, this in-process relay traces like the services the bench starts.
    producer = bootstrap(Environment({**tracing_variables(os.environ), **env}))
    # bootstrap configured this process's logging for the service; the harness keeps pika
    # quiet (shared.topology's passive probe makes pika warn about every fresh vhost).
    quiet_pika()
    try:
        started = time.perf_counter()
        for number in range(count):
            username = f"relay{number}"
            producer.register(username, f"{username}@example.com", f"Relay User {number}")
        register_s = time.perf_counter() - started

        relay = producer.relay()
        started = time.perf_counter()
        totals = relay.run_once()
        relay_s = time.perf_counter() - started
    finally:
        producer.close()
    in_queue = ready_count(amqp_url, QUEUE)
    if totals.published != count or in_queue != count:
        raise RuntimeError(
            f"relay published {totals.published} of {count} ({totals.failed} failed); "
            f"{in_queue} in the queue"
        )
    return RelayResult(
        events_per_s=count / relay_s,
        parameters={
            "database": "sqlite",
            "batch_size": producer.settings.relay.batch_size,
            "registrations_per_s": round(count / register_s, 1),
            "relay_s": round(relay_s, 3),
        },
    )
