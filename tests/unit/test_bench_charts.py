"""The benchmark's charts: which figures they draw and the points of the latency curves."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.charts import (
    LATENCY_FILE,
    THROUGHPUT_FILE,
    Bar,
    cdf_points,
    system_of,
    tail_points,
    throughput_bars,
    throughput_panels,
    write_charts,
)
from bench.results import Figure, Section


def _deliver() -> Section:
    section = Section("deliver")
    section.add_all(
        [
            Figure("dramatiq_instant", "Dramatiq, instant", 400.0, "emails/s"),
            Figure("faststream_instant", "FastStream, instant", 300.0, "emails/s"),
            Figure("worker_instant", "ours, instant", 500.0, "emails/s"),
            Figure("ideal_50ms", "ideal", 160.0, "emails/s"),
            Figure("worker_cpu_per_email", "ours, CPU", 1.8, "ms"),
            Figure("worker_50ms", "ours, 50 ms", None, "emails/s"),
        ]
    )
    return section


@pytest.mark.parametrize(
    ("key", "system"),
    [
        ("worker_defaults_50ms", "ours"),
        ("relay", "ours"),
        ("dramatiq_send", "dramatiq"),
        ("faststream_publish", "faststream"),
        ("pika_pipelined", "pika"),
        ("ideal_50ms", "ideal"),
        ("celery_apply_async", "celery"),
        # The brokers section's keys: the broker's name comes first.
        ("cluster_relay", "ours"),
        ("rabbitmq40_pika_pipelined", "pika"),
        ("cluster_dramatiq_50ms", "dramatiq"),
        ("rabbitmq40_ideal_50ms", "ideal"),
    ],
)
def test_system_of_a_figure_is_its_first_system_word(key: str, system: str) -> None:
    assert system_of(key) == system


def test_throughput_bars_are_the_rates_with_a_value_in_order() -> None:
    assert throughput_bars(_deliver()) == [
        Bar("Dramatiq, instant", 400.0, "dramatiq"),
        Bar("FastStream, instant", 300.0, "faststream"),
        Bar("ours, instant", 500.0, "ours"),
        Bar("ideal", 160.0, "ideal"),
    ]


def test_a_section_with_two_rate_units_gets_a_panel_for_each() -> None:
    section = Section("brokers")
    section.add_all(
        [
            Figure("cluster_pika_pipelined", "pika", 9000.0, "events/s"),
            Figure("cluster_relay", "relay", 8000.0, "events/s"),
            Figure("cluster_worker_50ms", "worker", 150.0, "emails/s"),
            Figure("rabbitmq40_worker_50ms", "not measured", None, "emails/s"),
        ]
    )
    assert throughput_panels(section) == {
        "brokers, events/s": [Bar("pika", 9000.0, "pika"), Bar("relay", 8000.0, "ours")],
        "brokers, emails/s": [Bar("worker", 150.0, "ours")],
    }
    assert list(throughput_panels(_deliver())) == ["deliver"]


def test_cdf_points_step_up_to_one() -> None:
    assert cdf_points([3.0, 1.0, 2.0, 4.0]) == ([1.0, 2.0, 3.0, 4.0], [0.25, 0.5, 0.75, 1.0])


def test_tail_points_leave_out_the_zero_a_log_scale_cannot_show() -> None:
    values, shares = tail_points([3.0, 1.0, 2.0, 4.0])
    assert values == [1.0, 2.0, 3.0]
    assert shares == pytest.approx([0.75, 0.5, 0.25])
    assert all(share > 0 for share in shares)


def test_write_charts_draws_both_pngs(tmp_path: Path) -> None:
    latency = Section("latency", parameters={"rate_asked": 200.0, "light_rate_asked": 50.0})
    latency.samples = {
        "ours": [1.0, 2.0, 5.0, 9.0],
        "dramatiq": [2.0, 3.0, 30.0],
        "faststream": [1.5, 2.5, 4.0],
        "light": [1.0, 1.2],
    }
    written = write_charts(
        {"deliver": _deliver(), "latency": latency, "memory": Section("memory")},
        tmp_path / "results",
        "a test",
    )
    assert [path.name for path in written] == [THROUGHPUT_FILE, LATENCY_FILE]
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_write_charts_skips_what_the_run_has_no_data_for(tmp_path: Path) -> None:
    failed = Section("publish", error="RuntimeError: broker gone")
    failed.add(Figure("relay", "relay", 100.0, "events/s"))
    assert write_charts({"publish": failed, "latency": Section("latency")}, tmp_path, "t") == []
    assert list(tmp_path.iterdir()) == []
