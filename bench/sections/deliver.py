"""Delivering: welcome emails per second into the SMTP sink, the worker beside Dramatiq and
FastStream.

Each run is in a vhost of its own with the queue filled beforehand. Three settings, each run for
all three systems one after the other (so that a slow minute of the machine hits them alike):

* equal concurrency (`concurrency`: WORKER_CONCURRENCY, Dramatiq's threads in one process,
  FastStream's prefetch), into an instant sink: the CPU per email is read here;
* the same, into a sink that takes `sink_latency_s` per message (as a remote mail server does).
  The most any pool of `concurrency` can do then is `concurrency / sink_latency_s`: the ideal;
* the same slow sink a network round trip away (`mail_rtt_s`, through `DelayProxy`), where
  a client's round trips per email count: the worker pipelines MAIL, RCPT and DATA (two round
  trips, the sink offers PIPELINING as real servers do), the peers' clients wait for each reply
  (four). The worker runs once more with PIPELINING not offered, to show what it is worth;
* each system at its own defaults, into the slow sink: the worker with no WORKER_CONCURRENCY,
  the Dramatiq command with no options (a process per CPU, eight threads each), FastStream with
  no prefetch (every message in the queue in flight at once).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.delay_proxy import DelayProxy
from bench.delivery_runs import (
    DeliveryResult,
    measure,
    preload_dramatiq_queue,
    preload_faststream_queue,
    preload_worker_queue,
    start_dramatiq,
    start_faststream,
    start_worker,
    worker_default_concurrency,
    worker_environment,
)
from bench.processes import Service
from bench.results import Figure, Section
from bench.sink import MailServer, SmtpSink
from bench.sizes import Sizes
from bench.vhost import private_vhost

SYSTEMS = ("dramatiq", "faststream", "worker")
_NAMES = {"dramatiq": "Dramatiq actor", "faststream": "FastStream subscriber"}
_OURS = "email-consumer run"


@dataclass(frozen=True, slots=True)
class Setting:
    suffix: str
    """What the figures' keys end with: instant, 50ms, 50ms_rtt10ms, defaults_50ms."""
    latency_s: float
    concurrency: int | None
    """None: each system at its own default."""
    rtt_s: float = 0.0
    """The round trip to the sink, through a `DelayProxy`; 0: straight to it."""


def run(sizes: Sizes, workdir: Path, log_level: str) -> Section:
    section = Section("deliver")
    count = sizes.deliver_events
    latency_ms = round(sizes.sink_latency_s * 1000)
    slow = f"{latency_ms}ms"
    remote = f"{slow}_rtt{round(sizes.mail_rtt_s * 1000)}ms"
    default_concurrency = worker_default_concurrency()
    section.parameters = {
        "events": count,
        "concurrency": sizes.concurrency,
        "sink_latency_ms": latency_ms,
        "mail_rtt_ms": round(sizes.mail_rtt_s * 1000),
        "warmup_fraction": sizes.warmup_fraction,
        "worker_log_level": log_level,
        "defaults": {
            "worker": f"WORKER_CONCURRENCY={default_concurrency} (unset)",
            "dramatiq": f"{os.cpu_count()} processes x 8 threads (no options)",
            "faststream": "no prefetch limit (default Channel)",
        },
        "runs": {},
    }
    settings = (
        Setting("instant", 0.0, sizes.concurrency),
        Setting(slow, sizes.sink_latency_s, sizes.concurrency),
        Setting(remote, sizes.sink_latency_s, sizes.concurrency, sizes.mail_rtt_s),
        Setting(f"defaults_{slow}", sizes.sink_latency_s, None),
    )
    results: dict[str, DeliveryResult] = {}
    with SmtpSink() as sink:
        for setting in settings:
            sink.set_latency(setting.latency_s)
            timeout_s = run_timeout_s(count, setting)
            with _mail_server(sink, setting.rtt_s) as server:
                for system in SYSTEMS:
                    key = f"{system}_{setting.suffix}"
                    results[key] = one_run(
                        system, setting, sink, server, sizes, workdir, log_level, timeout_s
                    )
                if setting.rtt_s:
                    sink.offer_pipelining(False)
                    try:
                        results[f"worker_no_pipelining_{setting.suffix}"] = one_run(
                            "worker",
                            setting,
                            sink,
                            server,
                            sizes,
                            workdir,
                            log_level,
                            timeout_s,
                            variant="-no-pipelining",
                        )
                    finally:
                        sink.offer_pipelining(True)
    section.parameters["runs"] = {
        name: {
            "delivered": r.delivered,
            "cpu_ms_per_email": round(r.cpu_ms_per_email, 3),
            "distinct_event_ids": r.distinct,
            "exit_code_after_sigterm": r.exit_code,
        }
        for name, r in results.items()
    }
    for figure in _figures(results, sizes, default_concurrency):
        section.add(figure)
    return section


def _figures(
    results: dict[str, DeliveryResult], sizes: Sizes, default_concurrency: int
) -> list[Figure]:
    latency_ms = round(sizes.sink_latency_s * 1000)
    slow = f"{latency_ms}ms"
    rtt_ms = round(sizes.mail_rtt_s * 1000)
    remote = f"{slow}_rtt{rtt_ms}ms"
    where_remote = f"{latency_ms} ms sink {rtt_ms} ms away"
    equal = f"{sizes.concurrency} at once"
    figures = [
        *_rates(results, "instant", f"{equal}, instant sink", "dramatiq_instant"),
        Figure(
            f"ideal_{slow}",
            f"ideal, {equal}, {latency_ms} ms sink",
            sizes.concurrency / sizes.sink_latency_s,
            "emails/s",
            what="concurrency divided by the sink's per-message latency",
        ),
        *_rates(results, slow, f"{equal}, {latency_ms} ms sink", f"ideal_{slow}"),
        *_rates(results, remote, f"{equal}, {where_remote}", f"dramatiq_{remote}"),
        Figure(
            f"worker_no_pipelining_{remote}",
            f"{_OURS}, {equal}, {where_remote}, PIPELINING not offered",
            results[f"worker_no_pipelining_{remote}"].emails_per_s,
            "emails/s",
            baseline=f"worker_{remote}",
            what="the same run, the sink's EHLO not offering PIPELINING: a command per round trip",
        ),
        Figure(
            f"ideal_defaults_{slow}",
            f"ideal of the worker's default ({default_concurrency}), {latency_ms} ms sink",
            default_concurrency / sizes.sink_latency_s,
            "emails/s",
            what="the worker's default WORKER_CONCURRENCY divided by the sink's latency",
        ),
    ]
    for system in SYSTEMS:
        key = f"defaults_{slow}"
        figures.append(
            Figure(
                f"{system}_{key}",
                f"{_NAMES.get(system, _OURS)}, its defaults, {latency_ms} ms sink",
                results[f"{system}_{key}"].emails_per_s,
                "emails/s",
                baseline=None if system != "worker" else f"dramatiq_{key}",
                what="as started with no concurrency setting: see parameters.defaults",
            )
        )
    for system in SYSTEMS:
        figures.append(
            Figure(
                f"{system}_cpu_per_email",
                f"{_NAMES.get(system, _OURS)}, CPU per email",
                results[f"{system}_instant"].cpu_ms_per_email,
                "ms",
                baseline=None if system != "worker" else "dramatiq_cpu_per_email",
                what=f"CPU time (user+system) of the process tree per email, instant sink, {equal}",
            )
        )
    return figures


def _rates(
    results: dict[str, DeliveryResult], suffix: str, where: str, baseline: str
) -> list[Figure]:
    """The three systems' rates for one setting, each as a ratio to `baseline` (the ideal, or
    Dramatiq's rate into the instant sink, which has no ideal)."""
    found = []
    for system in SYSTEMS:
        key = f"{system}_{suffix}"
        found.append(
            Figure(
                key,
                f"{_NAMES.get(system, _OURS)}, {where}",
                results[key].emails_per_s,
                "emails/s",
                baseline=baseline if baseline != key else None,
                what="queue filled beforehand; render + SMTP (smtplib, aiosmtplib for FastStream)",
            )
        )
    return found


def run_timeout_s(count: int, setting: Setting) -> float:
    """Generous: a run that is stuck must fail, a slow machine must not."""
    return 120 + count * max(setting.latency_s + 4 * setting.rtt_s, 0.005) * 4


def _mail_server(sink: SmtpSink, rtt_s: float) -> AbstractContextManager[MailServer]:
    """The sink itself, or a proxy in front of it that adds `rtt_s` of round trip."""
    if not rtt_s:
        return contextlib.nullcontext(sink)
    return DelayProxy(sink.port, rtt_s)


def one_run(
    system: str,
    setting: Setting,
    sink: SmtpSink,
    server: MailServer,
    sizes: Sizes,
    workdir: Path,
    log_level: str,
    timeout_s: float,
    variant: str = "",
) -> DeliveryResult:
    """One run; `variant` tells apart runs of one system in one setting (fresh events, store)."""
    count = sizes.deliver_events
    run = f"{setting.suffix}{variant}"
    name = f"{system}-{run}"
    with private_vhost("bench-deliver") as url:
        starter: Callable[[], AbstractContextManager[Service]]
        if system == "worker":
            preload_worker_queue(url, count, tag=f"w{run}")
            env = worker_environment(
                url, server, setting.concurrency, workdir / f"consumer-{run}.sqlite3", log_level
            )
            starter = partial(start_worker, env, workdir, name)
        elif system == "dramatiq":
            preload_dramatiq_queue(url, count, tag=f"d{run}")
            starter = partial(start_dramatiq, url, server, setting.concurrency, workdir, name)
        else:
            preload_faststream_queue(url, count, tag=f"f{run}")
            starter = partial(start_faststream, url, server, setting.concurrency, workdir, name)
        return measure(starter, sink, count, sizes.warmup_fraction, timeout_s)
