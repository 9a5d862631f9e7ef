"""`python -m bench`: run every section, print the table, write bench/results/latest.json.

A section that fails is recorded with its error and the others still run; the exit code is 1
if any section failed, so CI notices a broken harness, and 0 otherwise whatever the figures
are (figures are for people to read, never a pass/fail in CI).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import machine
from bench.charts import write_charts
from bench.logs import quiet_pika
from bench.report import markdown, print_report, write_json
from bench.results import Section, Target, compute_ratios, document, evaluate
from bench.sections import brokers, deliver, latency, memory, publish, scale
from bench.sizes import Sizes, sizes_for
from bench.tracing_sink import tracing_to_a_discarding_receiver
from bench.vhost import broker_admin
from shared.runtime import freeze_start_up_objects

SECTIONS = ("publish", "deliver", "latency", "memory", "scale", "brokers")
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.json"


def targets(sizes: Sizes) -> list[Target]:
    """The issue's targets, each a ratio (or value) read from figures of the same run. Where a
    target is set against the peers, it is listed against each: it holds against the better."""
    slow = f"{round(sizes.sink_latency_s * 1000)}ms"
    rate = f"{sizes.latency_rate:g}/s"
    light = f"{sizes.latency_rate * latency.LIGHT_RATE_SHARE:g}/s"
    equal = f"{sizes.concurrency} at once"
    found = [
        Target(
            "relay ≥ 0.8x plain pipelined pika",
            "publish",
            "relay",
            "pika_pipelined",
            "at_least",
            0.8,
        ),
        Target(
            f"worker ≥ 0.95x ideal, {equal}, {slow} sink",
            "deliver",
            f"worker_{slow}",
            f"ideal_{slow}",
            "at_least",
            0.95,
        ),
    ]
    for peer, name in (("dramatiq", "Dramatiq"), ("faststream", "FastStream")):
        publish_key = "dramatiq_send" if peer == "dramatiq" else "faststream_publish"
        found += [
            Target(
                f"relay ≥ 5x {name} publish (confirms)",
                "publish",
                "relay",
                publish_key,
                "at_least",
                5.0,
            ),
            Target(
                f"worker ≥ 3x {name}, each at its defaults, {slow} sink",
                "deliver",
                f"worker_defaults_{slow}",
                f"{peer}_defaults_{slow}",
                "at_least",
                3.0,
            ),
            Target(
                f"worker > {name}, {equal}, {slow} sink",
                "deliver",
                f"worker_{slow}",
                f"{peer}_{slow}",
                "above",
                1.0,
            ),
            Target(
                f"worker CPU per email ≤ 0.6x {name}'s",
                "deliver",
                "worker_cpu_per_email",
                f"{peer}_cpu_per_email",
                "at_most",
                0.6,
            ),
            Target(
                f"latency p99 ≤ {name}'s at {rate}", "latency", "p99", f"{peer}_p99", "at_most", 1.0
            ),
        ]
    found += [
        Target(
            f"latency p99 < {latency.TARGET_P99_MS:g} ms at {rate}",
            "latency",
            "p99",
            None,
            "below",
            latency.TARGET_P99_MS,
        ),
        Target(
            f"latency p99 < {latency.TARGET_P99_LIGHT_MS:g} ms at {light}",
            "latency",
            "p99_light_rate",
            None,
            "below",
            latency.TARGET_P99_LIGHT_MS,
        ),
        Target(
            f"worker RSS flat over {sizes.memory_events:,} events (end ≤ 1.10x warm-up)",
            "memory",
            "rss_end",
            "rss_warmup",
            "at_most",
            1.10,
        ),
        *scale_targets(sizes),
        *broker_targets(sizes),
    ]
    return found


def broker_targets(sizes: Sizes) -> list[Target]:
    """The publish and deliver targets against plain pika and the ideal, on each other broker."""
    slow = f"{round(sizes.sink_latency_s * 1000)}ms"
    found: list[Target] = []
    for broker in brokers.BROKERS:
        found += [
            Target(
                f"{broker}: relay ≥ 0.8x plain pipelined pika",
                "brokers",
                f"{broker}_relay",
                f"{broker}_pika_pipelined",
                "at_least",
                0.8,
            ),
            Target(
                f"{broker}: worker ≥ 0.95x ideal, {sizes.concurrency} at once, {slow} sink",
                "brokers",
                f"{broker}_worker_{slow}",
                f"{broker}_ideal_{slow}",
                "at_least",
                0.95,
            ),
        ]
    return found


def scale_targets(sizes: Sizes) -> list[Target]:
    """The scale section's targets, for each database it measures."""
    rows = f"{sizes.scale_rows:,}"
    stall = f"{scale.TARGET_STALL_MS:g} ms"
    found: list[Target] = []
    for database in sizes.scale_databases:
        for key in ("registrations", "relay", "worker"):
            found.append(
                Target(
                    f"{database}: {key} at {rows} rows ≥ {scale.TARGET_RATIO:g}x at 0",
                    "scale",
                    f"{database}_{key}_stored",
                    f"{database}_{key}_0",
                    "at_least",
                    scale.TARGET_RATIO,
                )
            )
        found += [
            Target(
                f"{database}: no register > {stall}, sweeping {rows} rows",
                "scale",
                f"{database}_sweep_register_max",
                None,
                "below",
                scale.TARGET_STALL_MS,
            ),
            Target(
                f"{database}: no email gap > {stall}, forgetting {rows} rows",
                "scale",
                f"{database}_forget_email_gap_max",
                None,
                "below",
                scale.TARGET_STALL_MS,
            ),
        ]
        for side in ("producer", "consumer"):
            found.append(
                Target(
                    f"{database}: {side} disk after retention ≤ {scale.TARGET_DISK_RATIO:g}x",
                    "scale",
                    f"{database}_{side}_disk_after",
                    f"{database}_{side}_disk_before",
                    "below",
                    scale.TARGET_DISK_RATIO,
                )
            )
        found.append(
            Target(
                f"{database}: no command fails, {sizes.scale_stress_rows:,} rows eligible",
                "scale",
                f"{database}_stress_failures",
                None,
                "below",
                1.0,
            )
        )
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the relay and the worker beside plain pika, Dramatiq and Celery.",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny run that only checks the harness works (for CI)",
    )
    parser.add_argument(
        "--events",
        type=int,
        metavar="N",
        help="events per fast publisher; the other sections scale with it",
    )
    parser.add_argument(
        "--memory-events",
        type=int,
        metavar="N",
        help="events through the worker in the memory section (100,000)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="the equal concurrency: WORKER_CONCURRENCY, the Dramatiq worker's threads and"
        " FastStream's prefetch (default: 8)",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        metavar="R",
        help="registrations per second in the latency section (default: 200)",
    )
    parser.add_argument(
        "--latency-repeats",
        type=int,
        metavar="N",
        help="runs of each latency measurement, min/median/max reported (default: 3)",
    )
    parser.add_argument(
        "--scale-rows",
        type=int,
        metavar="N",
        help="rows stored beforehand in the scale section (default: 1,000,000)",
    )
    parser.add_argument(
        "--scale-events",
        type=int,
        metavar="N",
        help="registrations, events and emails per scale throughput run (default: 5,000)",
    )
    parser.add_argument(
        "--scale-repeats",
        type=int,
        metavar="N",
        help="throughput runs per size in the scale section, median kept (default: 3)",
    )
    parser.add_argument(
        "--scale-stress-rows",
        type=int,
        metavar="N",
        help="eligible rows of the scale section's no-failure check (default: 0, not run)",
    )
    parser.add_argument(
        "--scale-database",
        action="append",
        choices=scale.DATABASES,
        help="measure only this database in the scale section (repeatable)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        metavar="SECTION",
        help=f"run only this section (repeatable): {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="run the services with OpenTelemetry tracing on, spans exported over OTLP/HTTP to"
        " a receiver in the bench that discards them (compare with a run without it)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="LOG_LEVEL of the measured services (default: INFO, as shipped)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to write the JSON (default: {DEFAULT_OUTPUT})",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="FILE",
        help="also write the tables in Markdown (for docs/PERFORMANCE.md)",
    )
    parser.add_argument(
        "--keep-logs", type=Path, metavar="DIR", help="keep the services' logs and databases in DIR"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in (
        "events",
        "memory_events",
        "concurrency",
        "latency_repeats",
        "scale_events",
        "scale_repeats",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            build_parser().error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("scale_rows", "scale_stress_rows"):
        value = getattr(args, name)
        if value is not None and value < 0:
            build_parser().error(f"--{name.replace('_', '-')} must be at least 0")
    sizes = sizes_for(
        smoke=args.smoke,
        events=args.events,
        memory_events=args.memory_events,
        concurrency=args.concurrency,
    )
    if args.latency_rate is not None:
        if not args.latency_rate > 0:
            build_parser().error("--latency-rate must be above 0")
        sizes = replace(sizes, latency_rate=args.latency_rate)
    if args.latency_repeats is not None:
        sizes = replace(sizes, latency_repeats=args.latency_repeats)
    scale_sizes = {
        f"scale_{name}": getattr(args, f"scale_{name}")
        for name in ("rows", "events", "repeats", "stress_rows")
        if getattr(args, f"scale_{name}") is not None
    }
    if args.scale_database:
        scale_sizes["scale_databases"] = tuple(dict.fromkeys(args.scale_database))
    sizes = replace(sizes, **scale_sizes)
    # Piped output (CI logs, `| tee`) gets a width that fits the table instead of rich's 80.
    quiet_pika()
    console = Console() if Console().is_terminal else Console(width=150)
    meta = machine.describe(broker_admin().base_url)
    meta["sizes"] = asdict(sizes)
    meta["smoke"] = args.smoke
    chosen = args.only or list(SECTIONS)
    # Dramatiq's latency run sends from this process and stamps each send: a full collection
    # walking every start-up object here would count against Dramatiq.
    freeze_start_up_objects()

    with contextlib.ExitStack() as optional:
        exports = (
            optional.enter_context(tracing_to_a_discarding_receiver()) if args.tracing else None
        )
        sections = _run_sections(args, sizes, chosen, console)
    meta["tracing"] = (
        {"on": True, "export_requests": exports.requests, "export_bytes": exports.bytes}
        if exports is not None
        else {"on": False}
    )
    meta["load_average_at_end"] = machine.load_average()
    for section in sections.values():
        compute_ratios(section)
    evaluated = [evaluate(t, sections) for t in targets(sizes) if t.section in sections]
    write_json(args.output, document(meta, sections, evaluated))
    if args.markdown:
        args.markdown.write_text(markdown(sections, evaluated))
    print_report(console, sections, evaluated, meta)
    # Beside the JSON: `make bench` draws into bench/results/, a run elsewhere leaves them be.
    charts = write_charts(sections, args.output.parent, chart_title(meta))
    console.print(f"written: {', '.join(str(path) for path in [args.output, *charts])}")
    return 1 if any(section.error for section in sections.values()) else 0


def _run_sections(
    args: argparse.Namespace, sizes: Sizes, chosen: Sequence[str], console: Console
) -> dict[str, Section]:
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        workdir = args.keep_logs or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        runners: dict[str, Callable[[], Section]] = {
            "publish": lambda: publish.run(sizes, workdir),
            "deliver": lambda: deliver.run(sizes, workdir, args.log_level),
            "latency": lambda: latency.run(sizes, workdir, args.log_level),
            "memory": lambda: memory.run(sizes, workdir, args.log_level),
            "scale": lambda: scale.run(sizes, workdir, args.log_level),
            "brokers": lambda: brokers.run(sizes, workdir, args.log_level),
        }
        return {name: _run_section(name, runners[name], console) for name in chosen}


def chart_title(meta: dict[str, Any]) -> str:
    """What a chart needs to be read on its own: the commit, the date, the machine."""
    return (
        f"commit {meta.get('commit', '?')}, {meta.get('started_at', '?')}, "
        f"{meta.get('cpus')} CPUs, load {meta.get('load_average_at_start')}"
    )


def _run_section(name: str, runner: Callable[[], Section], console: Console) -> Section:
    console.print(f"[bold]{name}[/bold] … (load average {machine.load_average()})")
    started = time.monotonic()
    try:
        section = runner()
    except Exception as error:  # noqa: BLE001 - one broken section must not hide the others
        console.print(f"[red]{name} failed[/red]: {error}")
        console.print(traceback.format_exc(limit=6), markup=False, highlight=False)
        section = Section(name, error=f"{type(error).__name__}: {error}")
    section.seconds = time.monotonic() - started
    section.parameters["load_average_after"] = machine.load_average()
    console.print(f"  done in {section.seconds:.1f} s")
    return section
