"""How much work each section does: the default run, the smoke run, or sizes from flags."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Sizes:
    publish_events: int
    """Events through the fast publishers (plain pika, the relay)."""
    peer_publish_events: int
    """Events through Dramatiq's and Celery's publishers (one confirm wait each: slower)."""
    deliver_events: int
    """Emails per delivery measurement (worker and Dramatiq, instant and slow sink)."""
    concurrency: int
    """The equal concurrency: WORKER_CONCURRENCY of the worker, threads of the Dramatiq worker,
    prefetch of the FastStream subscriber (the runs at each system's defaults set none)."""
    sink_latency_s: float
    latency_rate: float
    """Registrations per second in the latency section."""
    latency_events: int
    memory_events: int
    memory_warmup_events: int
    latency_repeats: int = 3
    """Runs of each latency measurement, the systems taking turns (min/median/max reported)."""
    warmup_fraction: float = 0.1
    """Share of each delivery run left out of the rate: start-up and connection set-up."""
    mail_rtt_s: float = 0.01
    """The network round trip to the mail server in the deliver section's "remote" setting
    (a relay in another zone, a provider's endpoint); the sink itself is on loopback."""
    scale_rows: int = 1_000_000
    """Rows stored beforehand in the scale section (users, outbox events, processed events)."""
    scale_events: int = 5_000
    """Registrations, relayed events and emails per throughput run of the scale section."""
    scale_repeats: int = 3
    """Throughput runs per database size, interleaved; the median is kept."""
    scale_stress_rows: int = 0
    """Eligible rows of the scale section's no-failure check (0: not run; the issue's 4M)."""
    scale_databases: tuple[str, ...] = ("sqlite", "postgresql")


# The memory section runs the 100,000 events (four to eight minutes: the worker is
# CPU-bound at 200-400 emails/s there), so that `make bench` reports every target in one run;
# `--memory-events` makes it shorter.
DEFAULT = Sizes(
    publish_events=10_000,
    peer_publish_events=3_000,
    deliver_events=3_000,
    # Eight, so that the ideal with the 50 ms sink (160/s) stays below what two cores can render
    # and send at all (the instant-sink figures): above that the "ideal" would measure the CPU.
    concurrency=8,
    sink_latency_s=0.05,
    latency_rate=200.0,
    latency_events=3_000,
    memory_events=100_000,
    memory_warmup_events=3_000,
)

SMOKE = Sizes(
    publish_events=60,
    peer_publish_events=30,
    deliver_events=40,
    concurrency=4,
    sink_latency_s=0.05,
    latency_rate=200.0,
    latency_events=40,
    memory_events=120,
    memory_warmup_events=40,
    latency_repeats=1,
    scale_rows=300,
    scale_events=40,
    scale_repeats=1,
    scale_stress_rows=400,
)


def sizes_for(
    *,
    smoke: bool,
    events: int | None,
    memory_events: int | None,
    concurrency: int | None,
) -> Sizes:
    """The base sizes with the flags applied; `events` scales every section but memory."""
    base = SMOKE if smoke else DEFAULT
    if events is not None:
        scale = events / base.publish_events
        base = replace(
            base,
            publish_events=events,
            peer_publish_events=max(10, round(base.peer_publish_events * scale)),
            deliver_events=max(10, round(base.deliver_events * scale)),
            latency_events=max(10, round(base.latency_events * scale)),
        )
    if memory_events is not None:
        warmup = max(10, min(base.memory_warmup_events, memory_events // 10))
        base = replace(base, memory_events=memory_events, memory_warmup_events=warmup)
    if concurrency is not None:
        base = replace(base, concurrency=concurrency)
    return base
