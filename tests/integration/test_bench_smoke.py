"""The benchmark harness still runs end to end (`python -m bench --smoke`).

A tiny run against the real broker and the real services: it proves that every section can
still set up its vhost, start the worker, the relay and the peers, and write its figures. It
asserts the shape of the results, never a timing: speed is read by people from `make bench`.
The harness isolates itself like the tests do: every section in a fresh private vhost, created
and deleted through tests/support/broker.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.broker import REPO_ROOT

# The smoke run starts some forty processes (every section, three systems, each setting): on
# two cores shared with other runs that takes longer than the suite's default 300 s per test.
pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(900)]

PEERS = ("dramatiq", "faststream")
SYSTEMS = (*PEERS, "worker")
PERCENTILES = ("p50", "p95", "p99", "p99_9", "max")
SECTIONS = {
    "publish": {
        "pika_pipelined",
        "dramatiq_send",
        "celery_apply_async",
        "faststream_publish",
        "relay",
    },
    "deliver": {
        *(
            f"{system}_{setting}"
            for system in SYSTEMS
            for setting in ("instant", "50ms", "50ms_rtt10ms", "defaults_50ms", "cpu_per_email")
        ),
        "worker_no_pipelining_50ms_rtt10ms",
        "ideal_50ms",
        "ideal_defaults_50ms",
    },
    "latency": {
        *(f"{peer}_{p}" for peer in PEERS for p in PERCENTILES),
        *PERCENTILES,
        *(f"{p}_light_rate" for p in ("p50", "p99", "p99_9")),
    },
    "memory": {"rss_warmup", "rss_end", "rss_peak"},
    "scale": {
        f"{database}_{figure}"
        for database in ("sqlite", "postgresql")
        for figure in (
            *(
                f"{measure}_{rows}"
                for measure in ("registrations", "relay", "worker")
                for rows in ("0", "stored")
            ),
            "sweep_register_max",
            "forget_email_gap_max",
            *(
                f"{side}_disk_{when}"
                for side in ("producer", "consumer")
                for when in ("before", "after")
            ),
            "stress_failures",
        )
    },
    "brokers": {
        f"{broker}_{figure}"
        for broker in ("rabbitmq40", "cluster")
        for figure in (
            "pika_pipelined",
            "relay",
            "dramatiq_instant",
            "worker_instant",
            "ideal_50ms",
            "dramatiq_50ms",
            "worker_50ms",
        )
    },
}
# Figures that may be 0 in a tiny run: a count of failures, a gap when the retention of a few
# hundred rows ended before the second email.
MAY_BE_ZERO = {
    f"{database}_{figure}"
    for database in ("sqlite", "postgresql")
    for figure in ("stress_failures", "forget_email_gap_max")
}


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    workdir = tmp_path_factory.mktemp("bench")
    output = workdir / "latest.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--scale-rows",
            "200",
            "--output",
            str(output),
            "--keep-logs",
            str(workdir / "logs"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    loaded: dict[str, object] = json.loads(Path(output).read_text())
    loaded["output"] = str(output)
    return loaded


def test_every_section_ran_without_error(smoke_results: dict[str, object]) -> None:
    sections = smoke_results["sections"]
    assert isinstance(sections, dict)
    assert set(sections) == set(SECTIONS)
    for name, section in sections.items():
        assert section["error"] is None, f"{name}: {section['error']}"


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_section_has_every_figure_with_a_value(
    smoke_results: dict[str, object], section: str
) -> None:
    sections = smoke_results["sections"]
    assert isinstance(sections, dict)
    figures = sections[section]["figures"]
    assert set(figures) == SECTIONS[section]
    for key, figure in figures.items():
        if key.split("_", 1)[0] in _brokers_not_measured(smoke_results):
            assert figure["value"] is None, key
            continue
        assert isinstance(figure["value"], int | float), key
        if key in MAY_BE_ZERO:
            assert figure["value"] >= 0, key
        else:
            assert figure["value"] > 0, key
        if figure["baseline"] is not None:
            assert figure["baseline"] in figures, key
            assert isinstance(figure["ratio"], int | float), key


def _brokers_not_measured(smoke_results: dict[str, object]) -> set[str]:
    sections = smoke_results["sections"]
    assert isinstance(sections, dict)
    measured = sections["brokers"]["parameters"]["brokers"]
    return {broker for broker, facts in measured.items() if "not_measured" in facts}


def test_the_brokers_section_ran_rabbitmq_4_where_its_root_was_given(
    smoke_results: dict[str, object],
) -> None:
    """CI gives the root (.ci/run); a user's `make test` may not, and is then told why."""
    sections = smoke_results["sections"]
    assert isinstance(sections, dict)
    measured = sections["brokers"]["parameters"]["brokers"]
    assert measured["cluster"]["rabbitmq"] != "unknown"
    if os.environ.get("BENCH_RABBITMQ4_ROOT"):
        assert measured["rabbitmq40"]["rabbitmq"].startswith("4.0")
    else:
        assert "BENCH_RABBITMQ4_ROOT" in measured["rabbitmq40"]["not_measured"]


def test_every_email_was_delivered_exactly_once(smoke_results: dict[str, object]) -> None:
    sections = smoke_results["sections"]
    assert isinstance(sections, dict)
    for name, run in sections["deliver"]["parameters"]["runs"].items():
        assert (
            run["delivered"]
            == run["distinct_event_ids"]
            == sections["deliver"]["parameters"]["events"]
        ), name
    memory = sections["memory"]["parameters"]
    assert memory["distinct_emails"] == memory["events"]
    for broker, facts in sections["brokers"]["parameters"]["brokers"].items():
        for name, run in facts.get("runs", {}).items():
            expected = sections["brokers"]["parameters"]["deliver_events"]
            assert run["delivered"] == run["distinct_event_ids"] == expected, (broker, name)


def test_the_scale_section_swept_every_stored_row(smoke_results: dict[str, object]) -> None:
    sections = smoke_results["sections"]
    assert isinstance(sections, dict)
    scale = sections["scale"]["parameters"]
    for database in ("sqlite", "postgresql"):
        measured = scale[database]
        assert measured["relay_retention"]["deleted"] == scale["rows"], database
        assert measured["worker_retention"]["deleted"] == scale["rows"], database
        assert measured["stress"]["deleted"] == scale["stress_rows"], database
        assert measured["stress"]["failures"] == 0, measured["stress"]["failed"]
        assert measured["bytes_per_row"]["outbox"] > 0, database


def test_the_charts_are_drawn_beside_the_json(smoke_results: dict[str, object]) -> None:
    directory = Path(str(smoke_results["output"])).parent
    for name in ("throughput.png", "latency_cdf.png"):
        assert (directory / name).read_bytes().startswith(b"\x89PNG"), name


def test_latency_percentiles_give_their_spread_over_the_repeats(
    smoke_results: dict[str, object],
) -> None:
    sections = smoke_results["sections"]
    assert isinstance(sections, dict)
    for key, figure in sections["latency"]["figures"].items():
        low, high = figure["spread"]
        assert low <= figure["value"] <= high, key


def test_targets_and_machine_are_recorded(smoke_results: dict[str, object]) -> None:
    targets = smoke_results["targets"]
    assert isinstance(targets, list)
    # The scale section's eight per database, the brokers section's two per broker.
    assert len(targets) == 15 + 2 * 8 + 2 * 2
    # A broker the run could not start (RabbitMQ 4.0 without its root) leaves its targets
    # unjudged; every other target is measured.
    unmeasured = _brokers_not_measured(smoke_results)
    for target in targets:
        unjudged = target["figure"].split("_", 1)[0] in unmeasured
        assert (target["measured"] is None) == unjudged, target["description"]
    meta = smoke_results["meta"]
    assert isinstance(meta, dict)
    assert meta["cpus"]
    assert meta["rabbitmq"]
    assert meta["smoke"] is True
