"""The benchmark's targets: how each is judged, and that every one names figures the sections
produce (a renamed figure would leave a target unmeasured, shown as "?")."""

from __future__ import annotations

import pytest

from bench.cli import targets
from bench.results import Comparison, Figure, Section, Target, evaluate
from bench.sizes import DEFAULT


def _sections(value: float, base: float) -> dict[str, Section]:
    section = Section("deliver")
    section.add_all([Figure("a", "a", value, "ms"), Figure("b", "b", base, "ms")])
    return {"deliver": section}


@pytest.mark.parametrize(
    ("comparison", "value", "met"),
    [
        ("at_most", 6.0, True),
        ("at_most", 6.1, False),
        ("below", 6.0, False),
        ("below", 5.9, True),
        ("at_least", 6.0, True),
        ("above", 6.0, False),
    ],
)
def test_a_ratio_target_is_judged_by_its_comparison(
    comparison: Comparison, value: float, met: bool
) -> None:
    target = evaluate(Target("t", "deliver", "a", "b", comparison, 0.6), _sections(value, 10.0))
    assert target.measured == pytest.approx(value / 10.0)
    assert target.met is met


def test_a_missing_figure_leaves_the_target_unjudged() -> None:
    target = evaluate(Target("t", "deliver", "c", "b", "at_most", 1.0), _sections(1.0, 1.0))
    assert target.met is None
    assert target.measured is None


def test_every_peer_target_is_set_against_both_peers() -> None:
    found = targets(DEFAULT)
    for figure, versus in (
        ("worker_defaults_50ms", "{}_defaults_50ms"),
        ("worker_cpu_per_email", "{}_cpu_per_email"),
        ("p99", "{}_p99"),
    ):
        against = {t.versus for t in found if t.figure == figure}
        assert {versus.format("dramatiq"), versus.format("faststream")} <= against, figure


def test_the_issue_thresholds() -> None:
    by_description = {t.description: t for t in targets(DEFAULT)}
    assert by_description["relay ≥ 0.8x plain pipelined pika"].threshold == 0.8
    assert by_description["latency p99 < 15 ms at 200/s"].threshold == 15.0
    assert by_description["latency p99 < 8 ms at 50/s"].figure == "p99_light_rate"
    assert by_description["worker ≥ 0.95x ideal, 8 at once, 50ms sink"].versus == "ideal_50ms"
    memory = by_description["worker RSS flat over 100,000 events (end ≤ 1.10x warm-up)"]
    assert memory.comparison == "at_most"


@pytest.mark.parametrize("broker", ["rabbitmq40", "cluster"])
def test_each_other_broker_has_the_relay_and_ideal_targets_on_its_own_figures(
    broker: str,
) -> None:
    by_description = {t.description: t for t in targets(DEFAULT)}
    relay = by_description[f"{broker}: relay ≥ 0.8x plain pipelined pika"]
    assert (relay.section, relay.figure, relay.versus) == (
        "brokers",
        f"{broker}_relay",
        f"{broker}_pika_pipelined",
    )
    worker = by_description[f"{broker}: worker ≥ 0.95x ideal, 8 at once, 50ms sink"]
    assert (worker.figure, worker.versus, worker.threshold) == (
        f"{broker}_worker_50ms",
        f"{broker}_ideal_50ms",
        0.95,
    )
