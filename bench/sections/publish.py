"""Publishing: events per second into the broker, each publisher in a vhost of its own.

* the ceiling: plain pika, confirms pipelined, persistent and mandatory, into the contract's
  topology (the quorum queue the relay publishes to);
* the peers: Dramatiq's `send` with `confirm_delivery=True`, Celery's `apply_async` with
  `confirm_publish`, FastStream's `publish` (publisher confirms, its default), each into a
  classic durable queue;
* this project: the outbox relay draining pending rows (confirmed, persistent, mandatory).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import faststream_peer
from bench.broker_setup import declare_contract_topology, purge_queue
from bench.celery_peer import build_task
from bench.dramatiq_peer import build_actor
from bench.pipelined import publish_pipelined
from bench.relay_run import measure_relay
from bench.results import Figure, Section
from bench.sizes import Sizes
from bench.vhost import private_vhost
from bench.workload import make_events, payload, wire_messages
from shared.topology import QUEUE

_PEER_WARMUP = 20


def run(sizes: Sizes, workdir: Path) -> Section:
    section = Section("publish")
    section.parameters = {
        "events": sizes.publish_events,
        "peer_events": sizes.peer_publish_events,
        "pipeline_window": 1000,
    }
    section.add(
        Figure(
            "pika_pipelined",
            "plain pika, pipelined confirms (ceiling)",
            pika_rate(sizes.publish_events),
            "events/s",
            what="SelectConnection, up to 1000 unconfirmed, persistent+mandatory, quorum queue;"
            " median of 3 runs",
        )
    )
    section.add(
        Figure(
            "dramatiq_send",
            "Dramatiq send, confirm_delivery=True",
            _dramatiq_rate(sizes.peer_publish_events),
            "events/s",
            baseline="pika_pipelined",
            what="actor.send() in a loop, each waiting for its confirm (classic durable queue);"
            " median of 3 runs",
        )
    )
    section.add(
        Figure(
            "celery_apply_async",
            "Celery apply_async, confirm_publish",
            _celery_rate(sizes.peer_publish_events),
            "events/s",
            baseline="pika_pipelined",
            what="task.apply_async() in a loop, each waiting for its confirm (classic durable"
            " queue); median of 3 runs",
        )
    )
    section.add(
        Figure(
            "faststream_publish",
            "FastStream publish, publisher confirms",
            _faststream_rate(sizes.peer_publish_events),
            "events/s",
            baseline="pika_pipelined",
            what="await broker.publish() in a loop, each waiting for its confirm (classic durable"
            " queue, persist=True); median of 3 runs",
        )
    )
    with private_vhost("bench-relay") as url:
        relay = measure_relay(url, sizes.publish_events, workdir)
    section.parameters["relay"] = relay.parameters
    section.add(
        Figure(
            "relay",
            "outbox relay (this project)",
            relay.events_per_s,
            "events/s",
            baseline="pika_pipelined",
            what="pending outbox rows drained: claimed, published with confirms, marked published",
        )
    )
    return section


def pika_rate(count: int) -> float:
    """The median of three runs: the ceiling is short, so one stall would skew it most."""
    messages = wire_messages(make_events(count, tag="pika"))
    rates = []
    with private_vhost("bench-pika") as url:
        declare_contract_topology(url)
        for _ in range(3):
            rates.append(count / publish_pipelined(url, messages))
            purge_queue(url, QUEUE)
    return statistics.median(rates)


def _dramatiq_rate(count: int) -> float:
    """Median of three timed loops of `send`, after a few untimed ones."""
    documents = [payload(event) for event in make_events(count + _PEER_WARMUP, tag="dramatiq")]
    with private_vhost("bench-dramatiq") as url:
        actor = build_actor(url, confirm_delivery=True)
        try:
            return _median_rate(_one_by_one(actor.send), documents)
        finally:
            actor.broker.close()


def _celery_rate(count: int) -> float:
    """Median of three timed loops of `apply_async`, after a few untimed ones."""
    documents = [payload(event) for event in make_events(count + _PEER_WARMUP, tag="celery")]
    with private_vhost("bench-celery") as url:
        task = build_task(url)
        try:
            return _median_rate(
                _one_by_one(lambda document: task.apply_async(args=[document])), documents
            )
        finally:
            task.app.close()


def _faststream_rate(count: int) -> float:
    """Median of three timed loops of `await publish`, after a few untimed ones: each loop is
    one coroutine, so the event loop is entered once per loop, not per event."""
    documents = [payload(event) for event in make_events(count + _PEER_WARMUP, tag="faststream")]
    loop = asyncio.new_event_loop()
    try:
        with private_vhost("bench-faststream") as url:
            broker = loop.run_until_complete(faststream_peer.open_publisher(url))

            async def publish_each(batch: list[dict[str, Any]]) -> None:
                for document in batch:
                    await faststream_peer.publish(broker, document)

            try:
                return _median_rate(
                    lambda batch: loop.run_until_complete(publish_each(batch)), documents
                )
            finally:
                loop.run_until_complete(broker.stop())
    finally:
        loop.close()


def _one_by_one(
    publish_one: Callable[[dict[str, Any]], object],
) -> Callable[[list[dict[str, Any]]], None]:
    def publish_each(batch: list[dict[str, Any]]) -> None:
        for document in batch:
            publish_one(document)

    return publish_each


def _median_rate(
    publish_each: Callable[[list[dict[str, Any]]], None], documents: list[dict[str, Any]]
) -> float:
    # The first events open the connection and declare the queues: not what is measured.
    publish_each(documents[:_PEER_WARMUP])
    timed = documents[_PEER_WARMUP:]
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        publish_each(timed)
        rates.append(len(timed) / (time.perf_counter() - started))
    return statistics.median(rates)
