"""Scale: the same work with N rows already stored as with none, and retention of all N.

For each database (SQLite, PostgreSQL) two producer databases and two worker databases are
made: one empty, one bulk-loaded with N users, N published outbox rows and N records of sent
emails, all a day old (bench/stored_rows.py). On each, in the same sitting and interleaved:

* registrations per second: `scale_events` users through the producer's own use case;
* relay drain rate: one `run_once()` publishing those events (its sweep included, which finds
  nothing eligible at the default retention of a week);
* worker emails per second: `email-consumer run` sending them to an instant sink.

The repeats run interleaved (empty, loaded, empty, loaded, ...) and the median of each is kept:
on a shared machine one repeat can be slowed by half by someone else's work, and the median of
three ignores that one, where the best of two keeps whichever repeat was lucky.

Then, on the loaded databases, retention with all N rows eligible (a retention of 12 hours):

* the relay runs with its start-up sweep while registrations go on at a steady rate
  (`register` through the use case, in this process): the longest one, and how long the sweep
  took;
* the worker starts with a queue of events and its start-up retention: the longest gap
  between two emails accepted while the retention ran;
* disk before and after each sweep (SQLite: file and WAL; PostgreSQL: the database's size).

With `scale_stress_rows`, a fresh database of that many eligible rows is swept by a relay
while `producer-service register` and `simulate` run as commands, and a worker forgets as many
records while it sends: every command must succeed and the worker must stay up.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.broker_setup import declare_contract_topology
from bench.delivery_runs import (
    measure,
    preload_worker_queue,
    start_worker,
    worker_environment,
)
from bench.logs import quiet_pika
from bench.processes import Service, python_command
from bench.relay_run import producer_environment, start_relay
from bench.results import Figure, Section
from bench.sink import SmtpSink
from bench.sizes import Sizes
from bench.stored_rows import load_consumer, load_producer, url_bytes
from bench.vhost import private_vhost
from shared.settings import Environment

DATABASES = ("sqlite", "postgresql")
STORED_AGE = timedelta(days=1)
# Shorter than the stored rows' age: every one of them is eligible.
RETENTION_S = 12 * 3600
REGISTER_RATE = 100.0
TARGET_RATIO = 0.9
TARGET_STALL_MS = 250.0
TARGET_DISK_RATIO = 1.2
_SWEEP_DONE = "published events removed from the outbox"
_FORGET_DONE = "old processed-event records deleted"
_POLL_S = 0.02
_STRESS_EMAILS = 20_000


@dataclass(frozen=True, slots=True)
class _Databases:
    producer: str
    consumer: str
    user_bytes: float = 0.0
    outbox_bytes: float = 0.0
    processed_bytes: float = 0.0


@dataclass(frozen=True, slots=True)
class _Throughput:
    registrations_per_s: float
    relay_per_s: float
    emails_per_s: float


def run(sizes: Sizes, workdir: Path, log_level: str) -> Section:
    section = Section("scale")
    section.parameters = {
        "rows": sizes.scale_rows,
        "events": sizes.scale_events,
        "repeats": sizes.scale_repeats,
        "stress_rows": sizes.scale_stress_rows,
        "retention_s": RETENTION_S,
        "stored_age_s": STORED_AGE.total_seconds(),
        "register_rate_during_retention": REGISTER_RATE,
        "concurrency": sizes.concurrency,
    }
    for database in sizes.scale_databases:
        section.parameters[database] = _measure_database(
            section, database, sizes, workdir, log_level
        )
    return section


def _measure_database(
    section: Section, database: str, sizes: Sizes, workdir: Path, log_level: str
) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    rows = sizes.scale_rows
    with (
        _loaded(database, workdir, f"{database}-empty", 0) as empty,
        _loaded(database, workdir, f"{database}-full", rows) as full,
    ):
        parameters["bytes_per_row"] = {
            "user": round(full.user_bytes, 1),
            "outbox": round(full.outbox_bytes, 1),
            "processed_event": round(full.processed_bytes, 1),
        }
        runs: dict[str, list[_Throughput]] = {"empty": [], "full": []}
        for repeat in range(sizes.scale_repeats):
            for name, databases in (("empty", empty), ("full", full)):
                runs[name].append(
                    _throughput(
                        databases,
                        sizes,
                        workdir,
                        f"{database}-{name}-{repeat}",
                        log_level,
                    )
                )
        parameters["runs"] = {
            name: [
                {
                    "registrations_per_s": round(run.registrations_per_s, 1),
                    "relay_per_s": round(run.relay_per_s, 1),
                    "emails_per_s": round(run.emails_per_s, 1),
                }
                for run in measured
            ]
            for name, measured in runs.items()
        }
        _add_throughput(section, database, rows, runs)
        if rows:
            sweep = _relay_retention(full, sizes, workdir, database)
            forget = _worker_retention(full, sizes, workdir, database, log_level)
            parameters["relay_retention"] = sweep
            parameters["worker_retention"] = forget
            _add_retention(section, database, rows, sweep, forget)
    if sizes.scale_stress_rows:
        stress = _stress(database, sizes, workdir, log_level)
        parameters["stress"] = stress
        section.add(
            Figure(
                f"{database}_stress_failures",
                f"{database}: failed commands, {sizes.scale_stress_rows:,} rows eligible",
                float(stress["failures"]),
                "commands",
                what="register and simulate commands (and the worker) that failed while a relay"
                " swept and a worker forgot that many rows",
            )
        )
    return parameters


# ---- databases -------------------------------------------------------------------------------


@contextmanager
def _loaded(database: str, workdir: Path, name: str, rows: int) -> Iterator[_Databases]:
    with (
        _database_url(database, workdir, f"{name}-producer") as producer,
        _database_url(database, workdir, f"{name}-consumer") as consumer,
    ):
        user_bytes, outbox_bytes = load_producer(producer, rows, STORED_AGE, tag="stored")
        processed_bytes = load_consumer(consumer, rows, STORED_AGE)
        yield _Databases(producer, consumer, user_bytes, outbox_bytes, processed_bytes)


@contextmanager
def _database_url(database: str, workdir: Path, name: str) -> Iterator[str]:
    if database == "sqlite":
        path = workdir / f"scale-{name}.sqlite3"
        try:
            yield f"sqlite:///{path}"
        finally:
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
        return
    # The test suite's own helpers: the same PostgreSQL, a database of our own, dropped after.
    from tests.support.postgres import admin_postgres_url, create_database, drop_database

    admin = admin_postgres_url()
    database_name, url = create_database(admin)
    try:
        yield url
    finally:
        drop_database(admin, database_name)


def _producer_env(amqp_url: str, database_url: str, **extra: str) -> dict[str, str]:
    env = producer_environment(amqp_url, Path("unused"), "WARNING")
    env["PRODUCER_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def _worker_env(
    amqp_url: str, sink: SmtpSink, sizes: Sizes, database_url: str, log_level: str, **extra: str
) -> dict[str, str]:
    env = worker_environment(amqp_url, sink, sizes.concurrency, Path("unused"), log_level)
    env["CONSUMER_DATABASE_URL"] = database_url
    env.update(extra)
    return env


# ---- throughput ------------------------------------------------------------------------------


def _throughput(
    databases: _Databases, sizes: Sizes, workdir: Path, name: str, log_level: str
) -> _Throughput:
    from producer_service.bootstrap import bootstrap

    count = sizes.scale_events
    with private_vhost("bench-scale") as amqp_url, SmtpSink() as sink:
        declare_contract_topology(amqp_url)
        producer = bootstrap(Environment(_producer_env(amqp_url, databases.producer)))
        quiet_pika()
        try:
            started = time.perf_counter()
            for number in range(count):
                username = f"{name.replace('-', '')}u{number}"
                producer.register(username, f"{username}@example.com", f"Scale User {number}")
            register_s = time.perf_counter() - started
            started = time.perf_counter()
            totals = producer.relay().run_once()
            relay_s = time.perf_counter() - started
        finally:
            producer.close()
        if totals.published != count:
            raise RuntimeError(f"{name}: the relay published {totals.published} of {count}")
        env = _worker_env(amqp_url, sink, sizes, databases.consumer, log_level)
        delivered = measure(
            lambda: start_worker(env, workdir, f"scale-worker-{name}"),
            sink,
            count,
            sizes.warmup_fraction,
            timeout_s=120 + count * 0.05,
        )
    if delivered.distinct != count:
        raise RuntimeError(f"{name}: {delivered.distinct} distinct emails of {count}")
    return _Throughput(count / register_s, count / relay_s, delivered.emails_per_s)


def _add_throughput(
    section: Section, database: str, rows: int, runs: dict[str, list[_Throughput]]
) -> None:
    measures = (
        ("registrations", "registrations/s", "registrations_per_s", "producer's use case"),
        ("relay", "events/s", "relay_per_s", "one relay run_once() draining the events"),
        ("worker", "emails/s", "emails_per_s", "email-consumer run, instant sink"),
    )
    for key, unit, attribute, what in measures:
        empty_key = f"{database}_{key}_0"
        section.add(
            Figure(
                empty_key,
                f"{database}: {key}, 0 rows stored",
                statistics.median(getattr(run, attribute) for run in runs["empty"]),
                unit,
                what=f"{what}; median of the repeats",
            )
        )
        section.add(
            Figure(
                f"{database}_{key}_stored",
                f"{database}: {key}, {rows:,} rows stored",
                statistics.median(getattr(run, attribute) for run in runs["full"]),
                unit,
                baseline=empty_key,
                what=f"{what}, beside {rows:,} stored rows; median of the repeats",
            )
        )


# ---- retention -------------------------------------------------------------------------------


def _relay_retention(
    databases: _Databases, sizes: Sizes, workdir: Path, database: str
) -> dict[str, Any]:
    """A relay's start-up sweep of every stored row while registrations go on."""
    from producer_service.bootstrap import bootstrap

    before = url_bytes(databases.producer)
    durations: list[float] = []
    with private_vhost("bench-scale-sweep") as amqp_url:
        declare_contract_topology(amqp_url)
        env = _producer_env(amqp_url, databases.producer, RELAY_RETENTION_S=str(RETENTION_S))
        producer = bootstrap(Environment(env))
        quiet_pika()
        try:
            # INFO: the line that says the sweep ended, with its count.
            relay_env = {**env, "LOG_LEVEL": "INFO"}
            with start_relay(relay_env, workdir, f"scale-relay-{database}") as relay:
                started = time.monotonic()
                deleted = _register_until_logged(producer, relay, _SWEEP_DONE, durations, sizes)
                sweep_s = time.monotonic() - started
        finally:
            producer.close()
    after = url_bytes(databases.producer)
    return {
        "deleted": deleted,
        "sweep_s": round(sweep_s, 2),
        "registrations": len(durations),
        "register_max_ms": round(max(durations) * 1000, 1),
        "register_median_ms": round(sorted(durations)[len(durations) // 2] * 1000, 2),
        "bytes_before": before,
        "bytes_after": after,
    }


def _register_until_logged(
    producer: Any, relay: Service, line: str, durations: list[float], sizes: Sizes
) -> int:
    interval = 1.0 / REGISTER_RATE
    deadline = time.monotonic() + 120 + sizes.scale_rows * 0.001
    next_at = time.monotonic()
    while True:
        deleted = _logged_count(relay.log_path, line)
        if deleted is not None:
            return deleted
        relay.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the relay's sweep did not end: {relay.log_tail()}")
        username = f"sweep{len(durations)}"
        started = time.perf_counter()
        producer.register(username, f"{username}@example.com", "Sweep User")
        durations.append(time.perf_counter() - started)
        next_at += interval
        time.sleep(max(next_at - time.monotonic(), 0.0))


def _worker_retention(
    databases: _Databases, sizes: Sizes, workdir: Path, database: str, log_level: str
) -> dict[str, Any]:
    """A worker's start-up retention of every stored record while it sends."""
    events = max(sizes.scale_events, sizes.scale_rows // 40)
    before = url_bytes(databases.consumer)
    with private_vhost("bench-scale-forget") as amqp_url, SmtpSink() as sink:
        preload_worker_queue(amqp_url, events, tag="forget")
        env = _worker_env(
            amqp_url,
            sink,
            sizes,
            databases.consumer,
            log_level,
            WORKER_PROCESSED_RETENTION_S=str(RETENTION_S),
        )
        with start_worker(env, workdir, f"scale-worker-forget-{database}") as worker:
            started = time.monotonic()
            deadline = started + 120 + sizes.scale_rows * 0.001
            while (deleted := _logged_count(worker.log_path, _FORGET_DONE)) is None:
                worker.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the worker's retention did not end: {worker.log_tail()}")
                time.sleep(_POLL_S)
            ended_at = time.time()
            forget_s = time.monotonic() - started
            worker.stop()
        accepted = sorted(record.accepted_at for record in sink.take())
    during = [moment for moment in accepted if moment <= ended_at]
    gaps = [later - earlier for earlier, later in itertools.pairwise(during)]
    longest = max(range(len(gaps)), key=gaps.__getitem__, default=None)
    after = url_bytes(databases.consumer)
    return {
        "deleted": deleted,
        "retention_s": round(forget_s, 2),
        "events_queued": events,
        "emails_during_retention": len(during),
        # Emails that ran out before the retention ended would leave its end unmeasured.
        "queue_ran_dry": len(during) >= events,
        "email_gap_max_ms": round(max(gaps, default=0.0) * 1000, 1),
        # Where the longest gap fell: at the start (connections opening) or in the middle.
        "email_gap_max_at_s": None if longest is None else round(during[longest] - during[0], 2),
        "bytes_before": before,
        "bytes_after": after,
    }


def _logged_count(log_path: Path, message: str) -> int | None:
    """The `count` of the service's JSON log line `message`, once it was written."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if message in line:
            try:
                return int(json.loads(line).get("count", 0))
            except (ValueError, AttributeError):
                return 0
    return None


def _add_retention(
    section: Section,
    database: str,
    rows: int,
    sweep: dict[str, Any],
    forget: dict[str, Any],
) -> None:
    section.add(
        Figure(
            f"{database}_sweep_register_max",
            f"{database}: longest register, relay sweeping {rows:,} rows",
            sweep["register_max_ms"],
            "ms",
            what=f"registrations at {REGISTER_RATE:g}/s through the use case while the relay's"
            f" start-up sweep deleted {sweep['deleted']:,} rows in {sweep['sweep_s']} s",
        )
    )
    section.add(
        Figure(
            f"{database}_forget_email_gap_max",
            f"{database}: longest gap between emails, worker forgetting {rows:,} rows",
            forget["email_gap_max_ms"],
            "ms",
            what=f"between two emails accepted while the worker's start-up retention deleted"
            f" {forget['deleted']:,} records in {forget['retention_s']} s",
        )
    )
    for side, measured in (("producer", sweep), ("consumer", forget)):
        before_key = f"{database}_{side}_disk_before"
        section.add(
            Figure(
                before_key,
                f"{database}: {side} database before retention",
                measured["bytes_before"] / (1024 * 1024),
                "MiB",
                what="SQLite: the file and its WAL; PostgreSQL: pg_database_size",
            )
        )
        section.add(
            Figure(
                f"{database}_{side}_disk_after",
                f"{database}: {side} database after retention",
                measured["bytes_after"] / (1024 * 1024),
                "MiB",
                baseline=before_key,
                what="the same, once the retention ended and the service stopped",
            )
        )


# ---- many more rows: nothing may fail --------------------------------------------------------


def _stress(database: str, sizes: Sizes, workdir: Path, log_level: str) -> dict[str, Any]:
    rows = sizes.scale_stress_rows
    failures: list[str] = []
    commands = 0
    with _loaded(database, workdir, f"{database}-stress", rows) as databases:
        with private_vhost("bench-scale-stress") as amqp_url:
            declare_contract_topology(amqp_url)
            env = _producer_env(amqp_url, databases.producer, RELAY_RETENTION_S=str(RETENTION_S))
            relay_env = {**env, "LOG_LEVEL": "INFO"}
            with start_relay(relay_env, workdir, f"scale-relay-stress-{database}") as relay:
                started = time.monotonic()
                deadline = started + 300 + rows * 0.001
                while (deleted := _logged_count(relay.log_path, _SWEEP_DONE)) is None:
                    relay.check_alive()
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the stress sweep did not end: {relay.log_tail()}")
                    commands += 2
                    failures.extend(_run_commands(env, commands, workdir, database))
                sweep_s = time.monotonic() - started
        forget = _stress_worker(databases, sizes, workdir, database, log_level)
    if forget["failure"]:
        failures.append(forget["failure"])
    return {
        "rows": rows,
        "deleted": deleted,
        "sweep_s": round(sweep_s, 2),
        "commands_run": commands,
        "worker_deleted": forget["deleted"],
        "worker_retention_s": forget["retention_s"],
        "failures": len(failures),
        "failed": failures[:5],
    }


def _run_commands(env: dict[str, str], number: int, workdir: Path, database: str) -> list[str]:
    failed = []
    username = f"stress{number}"
    for arguments in (
        ("register", username, f"{username}@example.com"),
        ("simulate", "--count", "20", "--rate", "50"),
    ):
        result = subprocess.run(
            python_command("producer_service", *arguments),
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            tail = " | ".join(result.stderr.strip().splitlines()[-3:])
            failed.append(f"{arguments[0]} exited with {result.returncode}: {tail}")
    return failed


def _stress_worker(
    databases: _Databases, sizes: Sizes, workdir: Path, database: str, log_level: str
) -> dict[str, Any]:
    # Enough to keep it sending through much of the retention, few enough to wait for all.
    events = min(max(sizes.scale_events, sizes.scale_stress_rows // 40), _STRESS_EMAILS)
    with private_vhost("bench-scale-stress-worker") as amqp_url, SmtpSink() as sink:
        preload_worker_queue(amqp_url, events, tag="stress")
        env = _worker_env(
            amqp_url,
            sink,
            sizes,
            databases.consumer,
            log_level,
            WORKER_PROCESSED_RETENTION_S=str(RETENTION_S),
        )
        with start_worker(env, workdir, f"scale-worker-stress-{database}") as worker:
            started = time.monotonic()
            deadline = started + 300 + sizes.scale_stress_rows * 0.001
            failure = None
            while (deleted := _logged_count(worker.log_path, _FORGET_DONE)) is None:
                if worker.process.poll() is not None:
                    failure = f"the worker exited with {worker.process.returncode}"
                    break
                if time.monotonic() > deadline:
                    failure = "the worker's retention did not end"
                    break
                time.sleep(_POLL_S)
            retention_s = time.monotonic() - started
            try:
                sink.wait_for(events, 120 + events * 0.05, alive=worker.check_alive)
            except (TimeoutError, RuntimeError) as error:
                failure = failure or f"the worker did not send every email: {error}"
    return {"deleted": deleted, "retention_s": round(retention_s, 2), "failure": failure}
