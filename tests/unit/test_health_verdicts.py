"""Liveness and readiness verdicts (a clock passed in), the relay's metered publisher, and the
endpoint that serves them."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Sequence

import pytest

from email_consumer.metrics import WorkerMetrics
from email_consumer.status import WorkerStatus
from producer_service.metrics import RelayMetrics
from producer_service.ports import OutboxMessage, PublishInFlight, PublishOutcome
from producer_service.relay_health import RelayHealth
from shared import metrics_server
from shared.errors import ConfigError
from shared.health import Heartbeat, Verdict
from shared.settings import MetricsSettings
from tests.support.ports import free_port, taken_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_heartbeat_is_live_until_it_has_been_silent_too_long() -> None:
    clock = Clock()
    beat = Heartbeat(10, clock)
    clock.now += 10
    assert beat.verdict("loop").ok
    clock.now += 0.5
    assert beat.verdict("loop") == Verdict(
        False, "loop made no progress for 10 s (LIVENESS_TIMEOUT_S 10)"
    )
    beat.beat()
    assert beat.verdict("loop").ok


def test_an_idle_worker_whose_loop_goes_round_is_live() -> None:
    clock = Clock()
    status = WorkerStatus(5, clock)
    for _ in range(10):
        clock.now += 1
        status.loop_ran()
    assert status.liveness().ok


def test_a_worker_whose_deliveries_never_settle_is_not_live_though_its_loop_runs() -> None:
    clock = Clock()
    status = WorkerStatus(5, clock)
    clock.now += 100  # idle a long time first: that is no reason to be found stuck later
    status.loop_ran()
    status.delivery_taken()
    clock.now += 4
    status.delivery_taken()  # more work arriving is no progress
    status.loop_ran()
    assert status.liveness().ok
    clock.now += 2
    status.loop_ran()
    verdict = status.liveness()
    assert not verdict.ok
    assert verdict.detail.startswith("2 deliveries in flight and none settled for 6 s")
    status.delivery_settled()
    assert status.liveness().ok


def test_a_lost_connection_forgets_its_deliveries() -> None:
    clock = Clock()
    status = WorkerStatus(5, clock)
    status.delivery_taken()
    status.disconnected()
    clock.now += 60
    status.loop_ran()
    assert status.liveness().ok
    assert status.in_flight == 0


def test_a_worker_is_ready_only_while_connected_and_consuming() -> None:
    status = WorkerStatus()
    assert status.readiness() == Verdict(False, "no broker connection")
    status.connected()
    assert status.readiness() == Verdict(False, "connected, not consuming")
    status.consuming(True)
    assert status.readiness() == Verdict(True, "connected and consuming")
    status.consuming(False)  # draining on SIGTERM
    assert not status.readiness().ok
    status.consuming(True)
    status.disconnected()
    assert status.readiness() == Verdict(False, "no broker connection")


def test_the_worker_gauges_read_its_status() -> None:
    status = WorkerStatus()
    metrics = WorkerMetrics(status=status)
    status.connected()
    status.consuming(True)
    status.delivery_taken()
    sample = metrics.registry.get_sample_value
    assert sample("email_consumer_in_flight") == 1
    assert sample("email_consumer_broker_connected") == 1
    assert sample("email_consumer_consuming") == 1


def test_a_relay_is_ready_with_a_broker_connection_and_a_database_that_answers() -> None:
    connected: list[bool] = [False]
    problem: list[str | None] = [None]
    health = RelayHealth(
        10, broker_connected=lambda: connected[0], database_problem=lambda: problem[0]
    )
    assert health.readiness() == Verdict(False, "no broker connection")
    connected[0] = True
    assert health.readiness().ok
    problem[0] = "OperationalError: connection refused"
    assert health.readiness() == Verdict(
        False, "the database does not answer: OperationalError: connection refused"
    )


class _Flight:
    def __init__(self, messages: Sequence[OutboxMessage]) -> None:
        self.messages = messages


class FakePublisher:
    def __init__(self, outcome: PublishOutcome) -> None:
        self.outcome = outcome
        self.is_open = True

    def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        return self.outcome

    def start(self, messages: Sequence[OutboxMessage]) -> PublishInFlight:
        return _Flight(messages)

    def finish(self, in_flight: PublishInFlight) -> PublishOutcome:
        return self.outcome

    def idle(self, seconds: float) -> None:
        pass

    def close(self) -> None:
        self.is_open = False


def test_the_metered_publisher_counts_what_the_broker_said_and_times_it() -> None:
    outcome = PublishOutcome(
        published=frozenset({"a", "b"}),
        failed={
            "c": "returned by the broker: 312 NO_ROUTE",
            "d": "refused by the broker (basic.nack)",
        },
    )
    fake = FakePublisher(outcome)
    metrics = RelayMetrics()
    publisher = metrics.metered(lambda: fake)()
    assert publisher.finish(publisher.start([])) is outcome
    assert publisher.finish(publisher.start([])) is outcome
    sample = metrics.registry.get_sample_value
    assert sample("producer_relay_events_total", {"outcome": "published"}) == 4
    assert sample("producer_relay_events_total", {"outcome": "returned"}) == 2
    assert sample("producer_relay_events_total", {"outcome": "failed"}) == 2
    assert sample("producer_relay_confirm_seconds_count") == 2
    assert sample("producer_relay_broker_connected") == 1
    publisher.close()
    assert sample("producer_relay_broker_connected") == 0


class _Probes:
    def liveness(self) -> Verdict:
        return Verdict(True, "going round")

    def readiness(self) -> Verdict:
        return Verdict(False, "no broker connection")


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_endpoint_serves_metrics_and_both_probes() -> None:
    metrics = WorkerMetrics()
    metrics.count("sent")
    server = metrics_server.serve(
        MetricsSettings(port=free_port(), address="127.0.0.1", liveness_timeout_s=10),
        metrics.registry,
        _Probes(),
    )
    assert server is not None
    try:
        status, body = _get(server.port, "/metrics")
        assert status == 200
        assert 'email_consumer_events_total{outcome="sent"} 1.0' in body
        assert _get(server.port, "/livez") == (200, "going round\n")
        assert _get(server.port, "/readyz") == (503, "no broker connection\n")
        assert _get(server.port, "/elsewhere")[0] == 404
    finally:
        server.close()


def test_port_0_serves_nothing_and_a_taken_port_is_a_configuration_error() -> None:
    registry = WorkerMetrics().registry
    off = MetricsSettings(port=0, address="127.0.0.1", liveness_timeout_s=10)
    assert metrics_server.serve(off, registry, _Probes()) is None
    with taken_port() as port:
        settings = MetricsSettings(port=port, address="127.0.0.1", liveness_timeout_s=10)
        with pytest.raises(ConfigError, match=f"METRICS_PORT {port} on METRICS_ADDRESS"):
            metrics_server.serve(settings, registry, _Probes())
