"""The brokers section's bookkeeping, without a broker: what it says when RabbitMQ 4.0 is not
given, and that its figures are the same keys whether measured or not."""

from __future__ import annotations

import pytest

from bench.sections import brokers
from bench.sizes import DEFAULT


def test_without_the_root_rabbitmq_4_is_not_started_and_the_reason_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(brokers.ROOT_VARIABLE, raising=False)
    reason = brokers._start("rabbitmq40")
    assert isinstance(reason, str)
    assert brokers.ROOT_VARIABLE in reason


def test_an_unmeasured_broker_has_every_key_with_no_value() -> None:
    measured = brokers._figures("cluster", DEFAULT, "50ms", {"relay": 900.0, "worker_50ms": 150})
    unmeasured = brokers._figures("rabbitmq40", DEFAULT, "50ms", {})
    assert [f.key.removeprefix("cluster_") for f in measured] == [
        f.key.removeprefix("rabbitmq40_") for f in unmeasured
    ]
    assert all(f.value is None for f in unmeasured)


def test_ratios_are_taken_on_the_same_broker() -> None:
    figures = {f.key: f for f in brokers._figures("cluster", DEFAULT, "50ms", {"relay": 1.0})}
    assert figures["cluster_relay"].baseline == "cluster_pika_pipelined"
    assert figures["cluster_worker_50ms"].baseline == "cluster_ideal_50ms"
    assert figures["cluster_ideal_50ms"].value == DEFAULT.concurrency / DEFAULT.sink_latency_s
    assert all(f.baseline is None or f.baseline.startswith("cluster_") for f in figures.values())
