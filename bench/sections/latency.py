"""Latency: from a committed registration to the email accepted by the mail server.

`producer-service simulate --count N --rate R` registers users at a steady rate while the
relay and the worker run, as in production. Each event's `occurred_at` (stamped in the
registration's transaction) is read from a tap queue; the sink records when it accepted each
email. Both clocks are this machine's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.broker_setup import declare_contract_topology
from bench.delivery_runs import start_dramatiq, start_worker, worker_environment
from bench.dramatiq_peer import build_actor
from bench.processes import python_command, run_to_end
from bench.relay_run import producer_environment, start_relay
from bench.results import Figure, Section
from bench.sink import SmtpSink
from bench.sizes import Sizes
from bench.tap import attach_tap, drain_occurred_at
from bench.vhost import private_vhost
from bench.workload import make_events, payload

TARGET_P99_MS = 25.0
# A quarter of the rate, for the path's own length: at the target rate every process of the
# pipeline shares two cores, and the figure is mostly queueing.
LIGHT_RATE_SHARE = 0.25
_WARMUP = 20
_PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))


def percentile(sorted_values: list[float], share: float) -> float:
    """The nearest-rank percentile (`share` in 0..1) of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class LatencyRun:
    latencies_ms: list[float]
    """Sorted, warm-up share left out."""
    matched: int
    rate_achieved: float


def run(sizes: Sizes, workdir: Path, log_level: str) -> Section:
    section = Section("latency")
    section.parameters = {
        "registrations": sizes.latency_events,
        "rate_asked": sizes.latency_rate,
        "concurrency": sizes.concurrency,
        "sink": "instant",
        "warmup_fraction": sizes.warmup_fraction,
    }
    shipped = _measure(sizes, workdir, log_level, "default")
    light_sizes = replace(
        sizes,
        latency_rate=sizes.latency_rate * LIGHT_RATE_SHARE,
        latency_events=max(10, round(sizes.latency_events * LIGHT_RATE_SHARE)),
    )
    light = _measure(light_sizes, workdir, log_level, "light")
    for name, result in (("default", shipped), ("light_rate", light)):
        section.parameters[name] = {
            "emails_matched": result.matched,
            "rate_achieved": round(result.rate_achieved, 1),
        }
    peer = _measure_dramatiq(sizes, workdir)
    section.parameters["dramatiq"] = {
        "emails_matched": peer.matched,
        "rate_achieved": round(peer.rate_achieved, 1),
    }
    for label, share in _PERCENTILES:
        section.add(
            Figure(
                f"dramatiq_{label}",
                f"Dramatiq send → email accepted, {label}",
                percentile(peer.latencies_ms, share),
                "ms",
                what="sink accept time minus the moment send() was called, same rate",
            )
        )
    for label, share in _PERCENTILES:
        section.add(
            Figure(
                label,
                f"committed → email accepted, {label}",
                percentile(shipped.latencies_ms, share),
                "ms",
                baseline=f"dramatiq_{label}",
                what="sink accept time minus the event's occurred_at; relay as shipped",
            )
        )
    light_rate = f"{light_sizes.latency_rate:g}/s"
    for label, share in (("p50", 0.50), ("p99", 0.99)):
        section.add(
            Figure(
                f"{label}_light_rate",
                f"{label} at {light_rate} (the path without queueing)",
                percentile(light.latencies_ms, share),
                "ms",
                what=f"as above, {light_sizes.latency_events} registrations at {light_rate}",
            )
        )
    return section


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
        timeout_s = 120 + count / sizes.latency_rate * 4
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


def _measure_dramatiq(sizes: Sizes, workdir: Path) -> LatencyRun:
    """Dramatiq at the same rate: `send` paced in this process, its worker in another."""
    count = sizes.latency_events
    documents = [payload(event) for event in make_events(count + _WARMUP, tag="dlat")]
    sent_at: dict[str, float] = {}
    timeout_s = 120 + count / sizes.latency_rate * 4
    with private_vhost("bench-latency") as url, SmtpSink() as sink:
        actor = build_actor(url, confirm_delivery=True)
        try:
            with start_dramatiq(url, sink, sizes.concurrency, workdir, "dramatiq-latency") as peer:
                for document in documents[:_WARMUP]:
                    actor.send(document)
                sink.wait_for(_WARMUP, timeout_s, alive=peer.check_alive)
                sink.take()
                started = time.monotonic()
                for number, document in enumerate(documents[_WARMUP:]):
                    pause = started + number / sizes.latency_rate - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    sent_at[document["event_id"]] = time.time()
                    actor.send(document)
                sink.wait_for(count, timeout_s, alive=peer.check_alive)
        finally:
            actor.broker.close()
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
