"""The latency section's summary of repeated runs: nearest-rank percentiles, their spread."""

from __future__ import annotations

import pytest

from bench.percentiles import PERCENTILES, Spread, percentile, pooled, spread, summarise


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.999) == 100.0
    assert percentile(values, 1.0) == 100.0
    assert percentile(values, 0.0) == 1.0


def test_p99_9_of_a_thousand_values_is_the_second_highest() -> None:
    values = [float(v) for v in range(1000)]
    assert percentile(values, 0.999) == 998.0


@pytest.mark.parametrize(("values", "share"), [([], 0.5), ([1.0], 1.5), ([1.0], -0.1)])
def test_percentile_refuses_what_has_none(values: list[float], share: float) -> None:
    with pytest.raises(ValueError, match=r"no values|not within"):
        percentile(values, share)


def test_spread_is_min_median_max() -> None:
    assert spread([9.0, 3.0, 5.0]) == Spread(3.0, 5.0, 9.0)
    assert spread([4.0, 2.0]) == Spread(2.0, 3.0, 4.0)
    with pytest.raises(ValueError, match="no runs"):
        spread([])


def test_summarise_takes_each_runs_percentile_then_their_spread() -> None:
    quiet = [float(v) for v in range(1, 101)]
    noisy = [*range(1, 99), 500.0, 900.0]
    middle = [v * 2 for v in quiet]
    summary = summarise([quiet, sorted(float(v) for v in noisy), middle])
    assert list(summary) == [label for label, _share in PERCENTILES]
    assert summary["p99"] == Spread(99.0, 198.0, 500.0)
    assert summary["max"] == Spread(100.0, 200.0, 900.0)
    assert summary["p50"] == Spread(50.0, 50.0, 100.0)


def test_summarise_of_one_run_has_no_spread() -> None:
    summary = summarise([[1.0, 2.0, 3.0]], (("p50", 0.5),))
    assert summary == {"p50": Spread(2.0, 2.0, 2.0)}


def test_pooled_sorts_every_run_together() -> None:
    assert pooled([[3.0, 5.0], [1.0], [4.0, 2.0]]) == [1.0, 2.0, 3.0, 4.0, 5.0]
