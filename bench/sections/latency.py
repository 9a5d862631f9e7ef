"""Latency: from a committed registration to the email accepted by the mail server.

`producer-service simulate --count N --rate R` registers users at a steady rate while the
relay and the worker run, as in production. Each event's `occurred_at` (stamped in the
registration's transaction) is read from a tap queue; the sink records when it accepted each
email. Both clocks are this machine's.

The peers, Dramatiq and FastStream, have no outbox: their latency runs from the moment this
process calls `send` / `publish` (confirms on, paced at the same rate) to the accept, each with
its worker at the same concurrency as ours.

Every run is repeated `latency_repeats` times, the systems taking turns, so a slow minute of the
shared machine falls on all of them; each percentile is the median over the repeats, with the
lowest and the highest beside it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import faststream_peer
from bench.broker_setup import declare_contract_topology
from bench.delivery_runs import start_dramatiq, start_faststream, start_worker, worker_environment
from bench.dramatiq_peer import build_actor
from bench.percentiles import PERCENTILES, pooled, summarise
from bench.processes import python_command, run_to_end
from bench.relay_run import producer_environment, start_relay
from bench.results import Figure, Section
from bench.sink import SmtpSink
from bench.sizes import Sizes
from bench.tap import attach_tap, drain_occurred_at
from bench.vhost import private_vhost
from bench.workload import make_events, payload

TARGET_P99_MS = 15.0
TARGET_P99_LIGHT_MS = 8.0
# A quarter of the rate, for the path's own length: at the target rate every process of the
# pipeline shares two cores, and the figure is mostly queueing.
LIGHT_RATE_SHARE = 0.25
_WARMUP = 20
_LIGHT_PERCENTILES = tuple(p for p in PERCENTILES if p[0] in ("p50", "p99", "p99_9"))
PEERS = {"dramatiq": "Dramatiq send", "faststream": "FastStream publish"}

Send = Callable[[dict[str, Any]], object]


@dataclass(frozen=True, slots=True)
class LatencyRun:
    latencies_ms: list[float]
    """Sorted, warm-up share left out."""
    matched: int
    rate_achieved: float


def run(sizes: Sizes, workdir: Path, log_level: str) -> Section:
    section = Section("latency")
    light_sizes = replace(
        sizes,
        latency_rate=sizes.latency_rate * LIGHT_RATE_SHARE,
        latency_events=max(10, round(sizes.latency_events * LIGHT_RATE_SHARE)),
    )
    section.parameters = {
        "registrations": sizes.latency_events,
        "rate_asked": sizes.latency_rate,
        "light_rate_asked": light_sizes.latency_rate,
        "repeats": sizes.latency_repeats,
        "concurrency": sizes.concurrency,
        "sink": "instant",
        "warmup_fraction": sizes.warmup_fraction,
    }
    series: dict[str, list[LatencyRun]] = {"ours": [], "light": [], **{p: [] for p in PEERS}}
    for repeat in range(sizes.latency_repeats):
        series["ours"].append(_measure(sizes, workdir, log_level, f"default-{repeat}"))
        for peer in PEERS:
            series[peer].append(_measure_peer(sizes, workdir, peer, repeat))
        series["light"].append(_measure(light_sizes, workdir, log_level, f"light-{repeat}"))
    for name, runs in series.items():
        section.parameters[name] = [
            {"emails_matched": r.matched, "rate_achieved": round(r.rate_achieved, 1)} for r in runs
        ]
        section.samples[name] = pooled([r.latencies_ms for r in runs])

    repeats = f"median of {sizes.latency_repeats} runs"
    for peer, label in PEERS.items():
        section.add_all(
            _percentile_figures(
                series[peer],
                PERCENTILES,
                key=f"{peer}_{{}}",
                label=f"{label} → email accepted, {{}}",
                baseline=None,
                what=f"sink accept time minus the moment the publish was called; {repeats}",
            )
        )
    section.add_all(
        _percentile_figures(
            series["ours"],
            PERCENTILES,
            key="{}",
            label="committed → email accepted, {}",
            baseline="dramatiq_{}",
            what=f"sink accept time minus the event's occurred_at; relay as shipped; {repeats}",
        )
    )
    light_rate = f"{light_sizes.latency_rate:g}/s"
    section.add_all(
        _percentile_figures(
            series["light"],
            _LIGHT_PERCENTILES,
            key="{}_light_rate",
            label=f"{{}} at {light_rate} (the path without queueing)",
            baseline=None,
            what=f"as above, {light_sizes.latency_events} registrations at {light_rate}; {repeats}",
        )
    )
    return section


def _percentile_figures(
    runs: list[LatencyRun],
    percentiles: tuple[tuple[str, float], ...],
    *,
    key: str,
    label: str,
    baseline: str | None,
    what: str,
) -> list[Figure]:
    """One figure per percentile; `key`, `label` and `baseline` have a `{}` for its name."""
    summary = summarise([r.latencies_ms for r in runs], percentiles)
    return [
        Figure(
            key.format(name),
            label.format(name.replace("_", ".")),
            found.median,
            "ms",
            baseline=baseline.format(name) if baseline else None,
            what=what,
            spread=[found.low, found.high],
        )
        for name, found in summary.items()
    ]


def _measure(sizes: Sizes, workdir: Path, log_level: str, name: str) -> LatencyRun:
    count = sizes.latency_events
    with private_vhost("bench-latency") as url, SmtpSink() as sink:
        declare_contract_topology(url)
        attach_tap(url)
        producer_env = producer_environment(
            url, workdir / f"producer-latency-{name}.sqlite3", log_level
        )
        consumer_env = worker_environment(
            url, sink, sizes.concurrency, workdir / f"consumer-latency-{name}.sqlite3", log_level
        )
        timeout_s = _timeout_s(sizes)
        with (
            start_worker(consumer_env, workdir, f"worker-latency-{name}") as worker,
            start_relay(producer_env, workdir, f"relay-latency-{name}") as relay,
        ):

            def alive() -> None:
                worker.check_alive()
                relay.check_alive()

            # A few registrations first, through the same path, so that nothing measured
            # waits for a process to start or a connection to open.
            _simulate(producer_env, workdir, f"{name}-warmup", _WARMUP, None, timeout_s)
            sink.wait_for(_WARMUP, timeout_s, alive=alive)
            sink.take()
            _simulate(producer_env, workdir, name, count, sizes.latency_rate, timeout_s)
            sink.wait_for(count, timeout_s, alive=alive)
        records = sink.take()
        occurred = drain_occurred_at(url)

    return _latencies(
        [
            (occurred[r.event_id].timestamp(), r.accepted_at)
            for r in records
            if r.event_id in occurred
        ],
        sizes.warmup_fraction,
    )


def _timeout_s(sizes: Sizes) -> float:
    return 120 + sizes.latency_events / sizes.latency_rate * 4


def _simulate(
    env: dict[str, str],
    workdir: Path,
    name: str,
    count: int,
    rate: float | None,
    timeout_s: float,
) -> None:
    command = python_command("producer_service", "simulate", "--count", str(count))
    if rate is not None:
        command += ["--rate", str(rate)]
    run_to_end(f"simulate-latency-{name}", command, env, workdir, timeout_s)


@contextmanager
def _dramatiq_sender(url: str) -> Iterator[Send]:
    """Dramatiq's `send`, waiting for its confirm."""
    actor = build_actor(url, confirm_delivery=True)
    try:
        yield actor.send
    finally:
        actor.broker.close()


@contextmanager
def _faststream_sender(url: str) -> Iterator[Send]:
    """FastStream's `await publish`: the event loop runs for each publish, to its confirm."""
    loop = asyncio.new_event_loop()
    try:
        broker = loop.run_until_complete(faststream_peer.open_publisher(url))
        try:
            yield lambda document: loop.run_until_complete(
                faststream_peer.publish(broker, document)
            )
        finally:
            loop.run_until_complete(broker.stop())
    finally:
        loop.close()


_SENDERS: dict[str, Callable[[str], AbstractContextManager[Send]]] = {
    "dramatiq": _dramatiq_sender,
    "faststream": _faststream_sender,
}
_STARTERS = {"dramatiq": start_dramatiq, "faststream": start_faststream}


def _measure_peer(sizes: Sizes, workdir: Path, peer: str, repeat: int) -> LatencyRun:
    """A peer at the same rate: its publish paced in this process, its worker (at the same
    concurrency as ours) in another."""
    count = sizes.latency_events
    documents = [payload(event) for event in make_events(count + _WARMUP, tag=f"{peer}lat")]
    sent_at: dict[str, float] = {}
    timeout_s = _timeout_s(sizes)
    name = f"{peer}-latency-{repeat}"
    with (
        private_vhost("bench-latency") as url,
        SmtpSink() as sink,
        _SENDERS[peer](url) as send,
        _STARTERS[peer](url, sink, sizes.concurrency, workdir, name) as worker,
    ):
        for document in documents[:_WARMUP]:
            send(document)
        sink.wait_for(_WARMUP, timeout_s, alive=worker.check_alive)
        sink.take()
        started = time.monotonic()
        for number, document in enumerate(documents[_WARMUP:]):
            pause = started + number / sizes.latency_rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent_at[document["event_id"]] = time.time()
            send(document)
        sink.wait_for(count, timeout_s, alive=worker.check_alive)
        records = sink.take()
    return _latencies(
        [(sent_at[r.event_id], r.accepted_at) for r in records if r.event_id in sent_at],
        sizes.warmup_fraction,
    )


def _latencies(pairs: list[tuple[float, float]], warmup_fraction: float) -> LatencyRun:
    """From (started, accepted) pairs: sorted latencies after the warm-up share, and the rate."""
    stamped = sorted(pairs)
    if len(stamped) < 2:
        raise RuntimeError(f"only {len(stamped)} emails could be matched to their events")
    first, last = stamped[0][0], stamped[-1][0]
    skip = int(len(stamped) * warmup_fraction)
    return LatencyRun(
        latencies_ms=sorted((accepted - began) * 1000 for began, accepted in stamped[skip:]),
        matched=len(stamped),
        rate_achieved=(len(stamped) - 1) / (last - first) if last > first else 0.0,
    )
