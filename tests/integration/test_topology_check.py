"""The start-up check: a service refuses a broker whose topology is not the one it declares.

RabbitMQ compares every argument of an existing queue or exchange with a redeclaration, so the
services' own declaration is the check. The queue here is what RabbitMQ 4 would make a delivery
limit of 20 for: the main queue declared without `x-delivery-limit`. Both versions run this file
(the 4.0 run through TEST_RABBITMQ_ROOT, `make test-rabbitmq4`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pika
import pytest

from shared import topology
from tests.support.producer import producer_env, run_producer
from tests.support.worker import TEST_RETRY_DELAYS, worker_environment

pytestmark = pytest.mark.broker


def _declare_main_queue_without_delivery_limit(amqp_url: str) -> None:
    arguments = topology.main_queue_arguments()
    del arguments["x-delivery-limit"]
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().queue_declare(topology.QUEUE, durable=True, arguments=arguments)
    finally:
        connection.close()


def _the_one_plain_line(stderr: str) -> str:
    """The error line; the JSON log lines around it are the service's log, not its answer."""
    plain = [line for line in stderr.splitlines() if line and not line.startswith("{")]
    assert len(plain) == 1, stderr
    return plain[0]


def test_the_worker_refuses_a_main_queue_without_its_delivery_limit(
    amqp_url: str, tmp_path: Path
) -> None:
    _declare_main_queue_without_delivery_limit(amqp_url)
    smtp = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": "9"}  # never reached
    result = subprocess.run(
        [sys.executable, "-m", "email_consumer", "run"],
        env=worker_environment(amqp_url, smtp, tmp_path / "consumer.sqlite3"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    line = _the_one_plain_line(result.stderr)
    assert line.startswith("email-consumer: error: configuration error: queue "), line
    assert f"'{topology.QUEUE}'" in line
    assert "x-delivery-limit" in line
    assert "Traceback" not in result.stderr


def test_the_relay_refuses_an_exchange_of_another_type(amqp_url: str, tmp_path: Path) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().exchange_declare(topology.EXCHANGE, "direct", durable=True)
    finally:
        connection.close()
    env = producer_env(amqp_url, f"sqlite:///{tmp_path / 'producer.sqlite3'}")
    result = run_producer("relay", "--once", env=env)
    assert result.returncode == 2, result.stderr
    line = _the_one_plain_line(result.stderr)
    assert line.startswith("producer-service: error: configuration error: exchange "), line
    assert f"'{topology.EXCHANGE}'" in line
    assert "received 'topic' but current is 'direct'" in line


def test_the_topology_the_code_declares_passes_the_check_again(amqp_url: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        for _ in range(2):
            topology.declare_topology(connection.channel(), retry_delays_s=TEST_RETRY_DELAYS)
    finally:
        connection.close()
