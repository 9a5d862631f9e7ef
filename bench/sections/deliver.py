"""Delivering: welcome emails per second into the SMTP sink, the worker beside Dramatiq.

Four runs, each in a vhost of its own with the queue filled beforehand: the worker and the
Dramatiq actor, each into an instant sink and into one that takes `sink_latency_s` per message
(as a remote mail server does). With that latency the most any pool of `concurrency` can do is
`concurrency / sink_latency_s`: the ideal.
"""

from __future__ import annotations

from pathlib import Path

from bench.delivery_runs import (
    DeliveryResult,
    measure,
    preload_dramatiq_queue,
    preload_worker_queue,
    start_dramatiq,
    start_worker,
    worker_environment,
)
from bench.results import Figure, Section
from bench.sink import SmtpSink
from bench.sizes import Sizes
from bench.vhost import private_vhost


def run(sizes: Sizes, workdir: Path, log_level: str) -> Section:
    section = Section("deliver")
    count = sizes.deliver_events
    latency_ms = round(sizes.sink_latency_s * 1000)
    section.parameters = {
        "events": count,
        "concurrency": sizes.concurrency,
        "sink_latency_ms": latency_ms,
        "warmup_fraction": sizes.warmup_fraction,
        "worker_log_level": log_level,
        "runs": {},
    }
    with SmtpSink() as sink:
        results: dict[str, DeliveryResult] = {}
        for latency_s, suffix in ((0.0, "instant"), (sizes.sink_latency_s, f"{latency_ms}ms")):
            sink.set_latency(latency_s)
            # Generous: a run that is stuck must fail, a slow machine must not.
            timeout_s = 120 + count * max(latency_s, 0.005) * 4
            results[f"worker_{suffix}"] = _worker_run(
                sink, sizes, workdir, log_level, timeout_s, suffix
            )
            results[f"dramatiq_{suffix}"] = _dramatiq_run(sink, sizes, workdir, timeout_s, suffix)
        section.parameters["runs"] = {
            name: {
                "delivered": r.delivered,
                "cpu_ms_per_email": round(r.cpu_ms_per_email, 3),
                "distinct_event_ids": r.distinct,
                "exit_code_after_sigterm": r.exit_code,
            }
            for name, r in results.items()
        }

    slow = f"{latency_ms}ms"
    section.add(
        Figure(
            "dramatiq_instant",
            "Dramatiq actor, instant sink",
            results["dramatiq_instant"].emails_per_s,
            "emails/s",
            what=f"Dramatiq worker, 1 process, {sizes.concurrency} threads; render + smtplib",
        )
    )
    section.add(
        Figure(
            "worker_instant",
            "email-consumer run, instant sink",
            results["worker_instant"].emails_per_s,
            "emails/s",
            baseline="dramatiq_instant",
            what=f"the worker, WORKER_CONCURRENCY={sizes.concurrency}; queue filled beforehand",
        )
    )
    section.add(
        Figure(
            f"ideal_{slow}",
            f"ideal with a {latency_ms} ms sink",
            sizes.concurrency / sizes.sink_latency_s,
            "emails/s",
            what="concurrency divided by the sink's per-message latency",
        )
    )
    section.add(
        Figure(
            f"dramatiq_{slow}",
            f"Dramatiq actor, {latency_ms} ms sink",
            results[f"dramatiq_{slow}"].emails_per_s,
            "emails/s",
            baseline=f"ideal_{slow}",
            what=f"as above, the sink taking {latency_ms} ms per message",
        )
    )
    section.add(
        Figure(
            f"worker_{slow}",
            f"email-consumer run, {latency_ms} ms sink",
            results[f"worker_{slow}"].emails_per_s,
            "emails/s",
            baseline=f"ideal_{slow}",
            what=f"as above, the sink taking {latency_ms} ms per message",
        )
    )
    section.add(
        Figure(
            "dramatiq_cpu_per_email",
            "Dramatiq actor, CPU per email",
            results["dramatiq_instant"].cpu_ms_per_email,
            "ms",
            what="CPU time (user+system) of the Dramatiq processes per email, instant sink",
        )
    )
    section.add(
        Figure(
            "worker_cpu_per_email",
            "email-consumer run, CPU per email",
            results["worker_instant"].cpu_ms_per_email,
            "ms",
            baseline="dramatiq_cpu_per_email",
            what="CPU time (user+system) of the worker process per email, instant sink",
        )
    )
    return section


def _worker_run(
    sink: SmtpSink, sizes: Sizes, workdir: Path, log_level: str, timeout_s: float, suffix: str
) -> DeliveryResult:
    with private_vhost("bench-deliver") as url:
        preload_worker_queue(url, sizes.deliver_events, tag=f"w{suffix}")
        env = worker_environment(
            url, sink, sizes.concurrency, workdir / f"consumer-{suffix}.sqlite3", log_level
        )
        return measure(
            lambda: start_worker(env, workdir, f"worker-{suffix}"),
            sink,
            sizes.deliver_events,
            sizes.warmup_fraction,
            timeout_s,
        )


def _dramatiq_run(
    sink: SmtpSink, sizes: Sizes, workdir: Path, timeout_s: float, suffix: str
) -> DeliveryResult:
    with private_vhost("bench-deliver") as url:
        preload_dramatiq_queue(url, sizes.deliver_events, tag=f"d{suffix}")
        return measure(
            lambda: start_dramatiq(url, sink, sizes.concurrency, workdir, f"dramatiq-{suffix}"),
            sink,
            sizes.deliver_events,
            sizes.warmup_fraction,
            timeout_s,
        )
