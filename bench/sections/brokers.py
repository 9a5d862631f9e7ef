"""Publishing and delivering on other brokers: a RabbitMQ 4.0 node and a three-node cluster.

The publish and deliver sections run on the shared broker (here one RabbitMQ 3.10 node). This
section starts each other broker for itself, runs the same measurements on it, beside plain
pika on that same broker, and destroys it:

* publish: plain pika with pipelined confirms (the ceiling) and the outbox relay;
* deliver: the worker and Dramatiq at equal concurrency, into the instant sink and into the slow
  sink (whose ideal is `concurrency / sink_latency_s`, as in the deliver section).

The brokers, each figure's key starting with the name:

* `rabbitmq40`: one RabbitMQ 4.0 node, from the root filesystem BENCH_RABBITMQ4_ROOT names
  (`make bench` builds it with .ci/rabbitmq4-root, which needs root). Without it the figures
  stay empty and the parameters say why;
* `cluster`: three nodes of the installed RabbitMQ, clustered on this machine. Every client
  connects to the first node, which declares the quorum queue and so holds its leader; the
  other two are followers, and a message is confirmed once two of the three have it on disk.
  All three share the two cores with the clients: the figures show what replication costs
  here, not what three machines would do.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Final

from bench.relay_run import measure_relay
from bench.results import Figure, Section
from bench.sections.deliver import Setting, one_run, run_timeout_s
from bench.sections.publish import pika_rate
from bench.sink import SmtpSink
from bench.sizes import Sizes
from bench.vhost import broker_under_test, private_vhost
from tests.support.broker import BrokerAdmin
from tests.support.cluster import RabbitCluster
from tests.support.rabbit_install import host_install, root_install
from tests.support.rabbit_node import RabbitNode

ROOT_VARIABLE: Final = "BENCH_RABBITMQ4_ROOT"
BROKERS: Final = ("rabbitmq40", "cluster")
_LABELS: Final = {"rabbitmq40": "RabbitMQ 4.0 node", "cluster": "3-node cluster"}
_CLUSTER_SIZE: Final = 3


def run(sizes: Sizes, workdir: Path, log_level: str) -> Section:
    section = Section("brokers")
    slow = f"{round(sizes.sink_latency_s * 1000)}ms"
    section.parameters = {
        "events": sizes.publish_events,
        "deliver_events": sizes.deliver_events,
        "concurrency": sizes.concurrency,
        "sink_latency_ms": round(sizes.sink_latency_s * 1000),
        "brokers": {},
    }
    with SmtpSink() as sink:
        for broker in BROKERS:
            started = _start(broker)
            if isinstance(started, str):
                section.parameters["brokers"][broker] = {"not_measured": started}
                figures = _figures(broker, sizes, slow, {})
            else:
                runs: dict[str, dict[str, int]] = {}
                with started as (admin, version), broker_under_test(admin):
                    measured = _measure(sizes, workdir, log_level, sink, slow, broker, runs)
                section.parameters["brokers"][broker] = {"rabbitmq": version, "runs": runs}
                figures = _figures(broker, sizes, slow, measured)
            for figure in figures:
                section.add(figure)
    return section


def _start(broker: str) -> AbstractContextManager[tuple[BrokerAdmin, str]] | str:
    """The broker, started inside the block; or why it cannot be measured here."""
    if broker == "cluster":
        return _cluster()
    root = os.environ.get(ROOT_VARIABLE, "")
    if not root:
        return (
            f"{ROOT_VARIABLE} is not set: `make bench` sets it when .ci/rabbitmq4-root can build"
            " the RabbitMQ 4.0 root filesystem (as root)"
        )
    return _single_node(Path(root))


@contextlib.contextmanager
def _single_node(root: Path) -> Iterator[tuple[BrokerAdmin, str]]:
    install = root_install(root, named_by=ROOT_VARIABLE)
    node = RabbitNode(install=install)
    try:
        node.start()
        yield BrokerAdmin(node.amqp_url, node.cli_command(), root=install.root), install.version
    finally:
        node.destroy()


@contextlib.contextmanager
def _cluster() -> Iterator[tuple[BrokerAdmin, str]]:
    install = host_install()
    cluster = RabbitCluster(_CLUSTER_SIZE, install=install)
    try:
        cluster.start()
        first = cluster.nodes[0]
        yield BrokerAdmin(first.amqp_url, first.cli_command()), install.version
    finally:
        cluster.destroy()


def _measure(
    sizes: Sizes,
    workdir: Path,
    log_level: str,
    sink: SmtpSink,
    slow: str,
    broker: str,
    runs: dict[str, dict[str, int]],
) -> dict[str, float]:
    """The figures' values by key (without the broker's name); each delivery run's counts go
    into `runs`, to show every email went out once."""
    measured = {"pika_pipelined": pika_rate(sizes.publish_events)}
    with private_vhost(f"bench-{broker}-relay") as url:
        relay = measure_relay(url, sizes.publish_events, workdir, f"relay-{broker}")
        measured["relay"] = relay.events_per_s
    for setting in (
        Setting("instant", 0.0, sizes.concurrency),
        Setting(slow, sizes.sink_latency_s, sizes.concurrency),
    ):
        sink.set_latency(setting.latency_s)
        for system in ("worker", "dramatiq"):
            result = one_run(
                system,
                setting,
                sink,
                sink,
                sizes,
                workdir,
                log_level,
                run_timeout_s(sizes.deliver_events, setting),
                variant=f"-{broker}",
            )
            measured[f"{system}_{setting.suffix}"] = result.emails_per_s
            runs[f"{system}_{setting.suffix}"] = {
                "delivered": result.delivered,
                "distinct_event_ids": result.distinct,
            }
    return measured


def _figures(broker: str, sizes: Sizes, slow: str, measured: dict[str, float]) -> list[Figure]:
    """The broker's figures; with nothing `measured`, the same keys with no value."""
    on = _LABELS[broker]
    equal = f"{sizes.concurrency} at once"
    latency_ms = round(sizes.sink_latency_s * 1000)

    def figure(key: str, label: str, unit: str, what: str, baseline: str | None) -> Figure:
        return Figure(
            f"{broker}_{key}",
            f"{label}, {on}",
            measured.get(key),
            unit,
            baseline=f"{broker}_{baseline}" if baseline else None,
            what=what,
        )

    return [
        figure(
            "pika_pipelined",
            "plain pika, pipelined confirms (ceiling)",
            "events/s",
            "as in the publish section, on this broker; median of 3 runs",
            None,
        ),
        figure(
            "relay",
            "outbox relay (this project)",
            "events/s",
            "as in the publish section, on this broker",
            "pika_pipelined",
        ),
        figure(
            "dramatiq_instant",
            f"Dramatiq actor, {equal}, instant sink",
            "emails/s",
            "as in the deliver section, on this broker",
            None,
        ),
        figure(
            "worker_instant",
            f"email-consumer run, {equal}, instant sink",
            "emails/s",
            "as in the deliver section, on this broker",
            "dramatiq_instant",
        ),
        Figure(
            f"{broker}_ideal_{slow}",
            f"ideal, {equal}, {latency_ms} ms sink, {on}",
            sizes.concurrency / sizes.sink_latency_s if measured else None,
            "emails/s",
            what="concurrency divided by the sink's per-message latency",
        ),
        figure(
            f"dramatiq_{slow}",
            f"Dramatiq actor, {equal}, {latency_ms} ms sink",
            "emails/s",
            "as in the deliver section, on this broker",
            f"ideal_{slow}",
        ),
        figure(
            f"worker_{slow}",
            f"email-consumer run, {equal}, {latency_ms} ms sink",
            "emails/s",
            "as in the deliver section, on this broker",
            f"ideal_{slow}",
        ),
    ]
