"""Percentiles of latency runs, and their spread over repeated runs.

A single run's p99 on a shared machine moves by a factor of two or more from one minute to the
next, so the latency section repeats every run and reports each percentile as the median of the
runs' values, with the lowest and the highest beside it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.50),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p99_9", 0.999),
    ("max", 1.0),
)
"""Figure key and share, in the order the report lists them."""


def percentile(sorted_values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (`share` in 0..1) of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share {share} is not within 0..1")
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class Spread:
    """One percentile over repeated runs."""

    low: float
    median: float
    high: float


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("no runs")
    return Spread(min(values), statistics.median(values), max(values))


def summarise(
    runs: Sequence[Sequence[float]],
    percentiles: Sequence[tuple[str, float]] = PERCENTILES,
) -> dict[str, Spread]:
    """Each percentile of each run (sorted latencies), then its spread over the runs."""
    if not runs:
        raise ValueError("no runs")
    return {label: spread([percentile(run, share) for run in runs]) for label, share in percentiles}


def pooled(runs: Sequence[Sequence[float]]) -> list[float]:
    """Every run's latencies together, sorted: what the distribution chart draws."""
    return sorted(value for run in runs for value in run)
