"""The relay's /metrics, /livez and /readyz, and `producer-service health`, against a real
broker: the counters and the outbox gauges move as events are published and returned."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import free_port, taken_port
from tests.support.probes import probe, run_health, scrape
from tests.support.producer import (
    COMMAND,
    closed_port_url,
    json_lines,
    producer_env,
    queue_event,
    run_producer,
    set_binding,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.broker]


def test_the_relay_counts_what_it_publishes_and_what_comes_back(
    amqp_url: str, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path}/producer.sqlite3"
    port = free_port()
    env = producer_env(amqp_url, database_url, RELAY_POLL_INTERVAL_S="0.1", METRICS_PORT=str(port))
    for name in ("first", "second"):
        queue_event(database_url, name)
    with _running_relay(env, tmp_path / "relay.log") as log:
        wait_until(lambda: _answers(port), what="the endpoint")
        wait_until(lambda: _sample(port, "outcome", "published") == 2, what="two published")
        published = scrape(port)
        set_binding(amqp_url, bound=False)
        queue_event(database_url, "lost")
        wait_until(lambda: _sample(port, "outcome", "returned") >= 1, what="a return")
        returned = scrape(port)
        health = run_health(COMMAND, env)
        set_binding(amqp_url, bound=True)
        wait_until(lambda: _sample(port, "outcome", "published") == 3, what="the third")
        after = scrape(port)
    assert published["producer_outbox_pending_events"] == 0
    assert published["producer_outbox_oldest_pending_age_seconds"] == 0
    assert published["producer_outbox_events_stored_total"] == 2
    assert published["producer_relay_confirm_seconds_count"] >= 1
    assert published["producer_relay_broker_connected"] == 1
    assert returned["producer_outbox_pending_events"] == 1
    assert returned["producer_outbox_oldest_pending_age_seconds"] > 0
    assert returned['producer_relay_events_total{outcome="failed"}'] == 0
    assert after["producer_outbox_pending_events"] == 0
    assert after["producer_outbox_events_stored_total"] == 3
    assert health.returncode == 0, health.stderr
    [line] = health.stdout.splitlines()
    assert line.startswith("live: the relay loop went round ")
    assert line.endswith("; ready: broker connected, database answers")
    [listening] = [entry for entry in log() if entry["event"] == "metrics endpoint listening"]
    assert (listening["address"], listening["port"]) == ("127.0.0.1", port)


def test_a_relay_without_its_broker_is_live_but_not_ready(tmp_path: Path) -> None:
    port = free_port()
    env = producer_env(
        closed_port_url(), f"sqlite:///{tmp_path}/producer.sqlite3", METRICS_PORT=str(port)
    )
    with _running_relay(env, tmp_path / "relay.log"):
        wait_until(lambda: _answers(port), what="the endpoint")
        health = run_health(COMMAND, env)
        live = probe(port, "/livez")
        metrics = scrape(port)
    assert health.returncode == 1
    assert health.stderr == "producer-service: error: not ready: no broker connection\n"
    assert live.status == 200, live.body
    assert metrics["producer_relay_broker_connected"] == 0


def test_health_without_a_running_relay_fails_in_one_line() -> None:
    port = free_port()
    result = run_health(
        COMMAND, producer_env(closed_port_url(), "sqlite:///unused.sqlite3", METRICS_PORT=str(port))
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"producer-service: error: no answer from 127.0.0.1:{port}/livez: ")


def test_health_with_the_endpoint_off_exits_2() -> None:
    result = run_health(COMMAND, producer_env(closed_port_url(), "sqlite:///unused.sqlite3"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "producer-service: error: configuration error: METRICS_PORT is 0 (off), so there is "
        "no health endpoint to ask"
    ]


def test_a_metrics_port_in_use_exits_2_in_one_line(tmp_path: Path) -> None:
    with taken_port() as port:
        env = producer_env(
            closed_port_url(), f"sqlite:///{tmp_path}/producer.sqlite3", METRICS_PORT=str(port)
        )
        result = run_producer("relay", env=env)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert errors == [
        f"producer-service: error: configuration error: METRICS_PORT {port} on METRICS_ADDRESS "
        "127.0.0.1 cannot be used: Address already in use"
    ]


@contextmanager
def _running_relay(
    env: dict[str, str], log_path: Path
) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    with log_path.open("w") as log_file:
        relay = subprocess.Popen(
            [COMMAND, "relay"], env=env, stdout=subprocess.DEVNULL, stderr=log_file
        )
    try:
        yield lambda: json_lines(log_path.read_text())
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=60)
    assert relay.returncode == 0, log_path.read_text()[-4000:]


def _sample(port: int, label: str, value: str) -> float:
    return scrape(port).get(f'producer_relay_events_total{{{label}="{value}"}}', -1)


def _answers(port: int) -> bool:
    try:
        probe(port, "/livez")
    except OSError:
        return False
    return True
