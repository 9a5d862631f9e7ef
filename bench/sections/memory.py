"""Memory: the worker's resident set after warm-up and after many events.

The queue is filled with `memory_events` events; the worker's RSS is read once the warm-up
share has been delivered (imports done, connections and caches built), sampled while it works,
and read again when the last email is accepted. A worker that keeps something per event (a set
of ids, a log buffer, a leak in a library) grows between the two readings.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.delivery_runs import preload_worker_queue, start_worker, worker_environment
from bench.processes import resident_memory_bytes
from bench.results import Figure, Section
from bench.sink import SmtpSink
from bench.sizes import Sizes
from bench.vhost import private_vhost

_MIB = 1024 * 1024
_SAMPLE_EVERY_S = 1.0


def run(sizes: Sizes, workdir: Path, log_level: str) -> Section:
    section = Section("memory")
    count, warmup = sizes.memory_events, sizes.memory_warmup_events
    section.parameters = {
        "events": count,
        "warmup_events": warmup,
        "concurrency": sizes.concurrency,
        "sink": "instant",
        "worker_log_level": log_level,
    }
    timeout_s = 300 + count * 0.02
    with private_vhost("bench-memory") as url, SmtpSink() as sink:
        preload_worker_queue(url, count, tag="mem")
        env = worker_environment(
            url, sink, sizes.concurrency, workdir / "consumer-memory.sqlite3", log_level
        )
        with start_worker(env, workdir, "worker-memory") as worker:
            sink.wait_for(warmup, timeout_s, alive=worker.check_alive)
            warm_rss = resident_memory_bytes(worker.pid)
            warm_at = time.monotonic()
            peak_rss = warm_rss
            while sink.count < count:
                deadline = min(time.monotonic() + _SAMPLE_EVERY_S, warm_at + timeout_s)
                try:
                    sink.wait_for(
                        count, max(deadline - time.monotonic(), 0.0), alive=worker.check_alive
                    )
                except TimeoutError:
                    if time.monotonic() >= warm_at + timeout_s:
                        raise
                peak_rss = max(peak_rss, resident_memory_bytes(worker.pid))
            end_rss = resident_memory_bytes(worker.pid)
            finished_at = time.monotonic()
            section.parameters["exit_code_after_sigterm"] = worker.stop()
        delivered = len({record.event_id for record in sink.take()})
    section.parameters["distinct_emails"] = delivered
    section.parameters["emails_per_s_after_warmup"] = round(
        (count - warmup) / max(finished_at - warm_at, 1e-9), 1
    )
    section.add(
        Figure(
            "rss_warmup",
            f"worker RSS after {warmup:,} events",
            warm_rss / _MIB,
            "MiB",
            what="VmRSS of `email-consumer run` once the warm-up share was delivered",
        )
    )
    section.add(
        Figure(
            "rss_end",
            f"worker RSS after {count:,} events",
            end_rss / _MIB,
            "MiB",
            baseline="rss_warmup",
            what="VmRSS when the last email was accepted",
        )
    )
    section.add(
        Figure(
            "rss_peak",
            "worker RSS, highest sample",
            peak_rss / _MIB,
            "MiB",
            baseline="rss_warmup",
            what=f"highest VmRSS seen, sampled every {_SAMPLE_EVERY_S:g} s",
        )
    )
    return section
