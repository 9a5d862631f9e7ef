"""The worker's /metrics, /livez and /readyz, and `email-consumer health`, against a real broker
and a real SMTP server: ready only while connected and consuming, not live while stuck."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.probes import probe, run_health, scrape
from tests.support.rabbit_node import RabbitNode
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import new_event, patient_smtp, publish_event, running_worker

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_a_consuming_worker_is_live_and_ready_and_says_where_it_listens(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    port = free_port()
    with running_worker(
        amqp_url, smtp_server.environment(), tmp_path, METRICS_PORT=str(port)
    ) as worker:
        wait_until(lambda: probe(port, "/readyz").status == 200, what="the worker to be ready")
        publish_event(amqp_url, new_event())
        smtp_server.wait_for(1)
        wait_until(lambda: scrape(port)["email_consumer_in_flight"] == 0, what="the settle")
        health = run_health("email-consumer", worker.env)
        metrics = scrape(port)
        lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    assert health.returncode == 0, health.stderr
    assert health.stderr == ""
    [line] = health.stdout.splitlines()
    assert line.startswith("live: the connection loop went round ")
    assert line.endswith("; ready: connected and consuming")
    assert metrics["email_consumer_broker_connected"] == 1
    assert metrics["email_consumer_consuming"] == 1
    [listening] = [entry for entry in lines if entry["event"] == "metrics endpoint listening"]
    assert (listening["address"], listening["port"]) == ("127.0.0.1", port)


def test_a_worker_without_its_broker_is_not_ready_but_live_and_ready_again_after(
    private_rabbit: RabbitNode, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    port = free_port()
    with running_worker(
        private_rabbit.amqp_url,
        smtp_server.environment(),
        tmp_path,
        METRICS_PORT=str(port),
        WORKER_RECONNECT_MAX_DELAY_S="1",
        # Short, so that a worker waiting for its broker would show as stuck if waiting did
        # not count as progress.
        LIVENESS_TIMEOUT_S="15",
    ) as worker:
        wait_until(lambda: probe(port, "/readyz").status == 200, what="the worker to be ready")
        private_rabbit.stop()
        wait_until(lambda: probe(port, "/readyz").status == 503, what="the worker to notice")
        away = run_health("email-consumer", worker.env)
        assert probe(port, "/readyz").body == "no broker connection"
        metrics = scrape(port)
        live = probe(port, "/livez")
        private_rabbit.start()
        wait_until(lambda: probe(port, "/readyz").status == 200, what="the worker to come back")
        back = run_health("email-consumer", worker.env)
    assert (metrics["email_consumer_broker_connected"], metrics["email_consumer_consuming"]) == (
        0,
        0,
    )
    assert live.status == 200, live.body
    assert away.returncode == 1
    assert away.stdout == ""
    assert away.stderr == "email-consumer: error: not ready: no broker connection\n"
    assert back.returncode == 0, back.stderr


def test_a_worker_whose_every_delivery_hangs_in_smtp_is_not_live(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    # The real failure: the mail server takes the message and never answers (here: for 15 s),
    # so the one SMTP connection blocks while the broker connection stays up and heartbeats
    # flow. Ready it still is; live it is not, past LIVENESS_TIMEOUT_S without a settlement.
    smtp_server.stall(15)
    port = free_port()
    env = {"METRICS_PORT": str(port), "LIVENESS_TIMEOUT_S": "2", "WORKER_CONCURRENCY": "1"}
    with running_worker(
        amqp_url, smtp_server.environment(), tmp_path, **env, **patient_smtp(60)
    ) as worker:
        assert probe(port, "/livez").status == 200
        publish_event(amqp_url, new_event())
        wait_until(lambda: probe(port, "/livez").status == 503, what="the worker to be stuck")
        stuck = run_health("email-consumer", worker.env)
        ready = probe(port, "/readyz")
        smtp_server.wait_for(1, timeout_s=60)
        wait_until(lambda: probe(port, "/livez").status == 200, what="the worker to go on")
    assert stuck.returncode == 1
    [line] = stuck.stderr.splitlines()
    assert line.startswith("email-consumer: error: not live: 1 deliveries in flight and none")
    assert ready.status == 200, "a live connection alone is not liveness, but it is readiness"


def test_health_without_a_metrics_port_is_a_configuration_error(tmp_path: Path) -> None:
    result = run_health("email-consumer", {"PATH": _path(), "METRICS_PORT": "0"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "email-consumer: error: configuration error: METRICS_PORT is 0 (off), so there is no "
        "health endpoint to ask"
    ]


def test_health_with_nothing_listening_fails_in_one_line() -> None:
    port = free_port()
    result = run_health("email-consumer", {"PATH": _path(), "METRICS_PORT": str(port)})
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"email-consumer: error: no answer from 127.0.0.1:{port}/livez: ")
    assert result.stdout == ""


def _path() -> str:
    return os.environ["PATH"]
