"""The README's Docker quick start, run for real: `docker compose up --build`, register users,
see the emails in Mailpit, scale the worker, use the DLQ tools, `docker compose down -v`.

The tests share one stack and run in file order, each building on the one before. They need a
Docker engine (`make compose-test`; .ci/run runs them where one answers) and fail, not skip,
without one.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from typing import Any
from urllib.parse import urlencode

import pytest

from shared import topology
from tests.compose.stack import ComposeStack
from tests.support.waiting import wait_until

# The first test also builds and starts the stack: longer than the suite-wide timeout allows.
pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(1200)]

# Building and starting the stack from scratch takes minutes on a busy machine.
STACK_TIMEOUT_S = 300


def test_up_builds_one_image_and_every_service_is_up(stack: ComposeStack) -> None:
    # One build serves the relay, the worker and the producer: nothing dangling.
    images = stack.built_images()
    assert len(images) == 1, f"the build made {len(images)} images: {images}"
    states = stack.states()
    assert len(states) == 5, states  # the producer is a one-off command, not started by `up`
    for name, (state, health) in states.items():
        assert state == "running", f"{name} is {state}"
        assert health in ("", "healthy"), f"{name} is {health}"


def test_a_second_up_build_recreates_nothing(stack: ComposeStack) -> None:
    before = {service: stack.container_ids(service) for service in ("relay", "worker")}
    stack.must("up", "--build", "--detach", "--wait", timeout_s=STACK_TIMEOUT_S * 3)
    after = {service: stack.container_ids(service) for service in ("relay", "worker")}
    assert after == before, "an unchanged service was recreated"
    images = stack.built_images()
    assert len(images) == 1, f"a rebuild left images behind: {images}"


def test_register_sends_one_welcome_email_and_again_is_a_conflict(stack: ComposeStack) -> None:
    registered = stack.register("alice", "alice@example.com")
    assert registered.returncode == 0, registered.stderr
    wait_until(
        lambda: "alice@example.com" in stack.recipients(),
        timeout_s=STACK_TIMEOUT_S,
        what="alice's welcome email in Mailpit",
    )
    [email] = stack.emails()
    assert email["Subject"].startswith("Welcome"), email

    again = stack.register("alice", "alice@example.com")
    assert again.returncode == 3, again.stderr
    assert "already registered" in again.stderr
    assert stack.recipients() == ["alice@example.com"]


def test_three_workers_send_every_email_once(stack: ComposeStack) -> None:
    stack.must("up", "--detach", "--wait", "--scale", "worker=3", timeout_s=STACK_TIMEOUT_S)
    assert len(stack.container_ids("worker")) == 3

    users = ["bob", "carol", "dave", "erin", "frank", "grace"]
    for user in users:
        registered = stack.register(user, f"{user}@example.com")
        assert registered.returncode == 0, registered.stderr
    expected = sorted(["alice@example.com", *(f"{user}@example.com" for user in users)])
    wait_until(
        lambda: set(stack.recipients()) == set(expected),
        timeout_s=STACK_TIMEOUT_S,
        what=f"the {len(expected)} welcome emails in Mailpit",
    )
    # Once the queue holds nothing, ready or unacknowledged, no email can still be coming.
    wait_until(
        lambda: stack.queue_counts()[topology.QUEUE] == (0, 0),
        timeout_s=STACK_TIMEOUT_S,
        what=f"{topology.QUEUE} drained",
    )
    duplicates = {address: n for address, n in Counter(stack.recipients()).items() if n > 1}
    assert duplicates == {}
    assert stack.recipients() == expected


def test_the_monitoring_prometheus_scrapes_the_relay_every_worker_and_the_broker(
    stack: ComposeStack,
) -> None:
    # Grafana and Jaeger have no stand-in image on a machine without a registry: Prometheus
    # alone is started from the profile here.
    stack.must(
        "--profile",
        "monitoring",
        "up",
        "--detach",
        "--wait",
        "prometheus",
        timeout_s=STACK_TIMEOUT_S,
    )
    prometheus = f"http://127.0.0.1:{stack.port('PROMETHEUS_PORT')}"
    expected = {"relay": 1, "email-consumer": 3, "rabbitmq": 1, "rabbitmq-queues": 1}

    def every_target_up() -> bool:
        targets = _get_json(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
        healthy = Counter(t["labels"]["job"] for t in targets if t["health"] == "up")
        return dict(healthy) == expected

    wait_until(every_target_up, timeout_s=STACK_TIMEOUT_S, what=f"targets up: {expected}")

    def scraped(query: str) -> float | None:
        result = _get_json(f"{prometheus}/api/v1/query?{urlencode({'query': query})}")
        values = result["data"]["result"]
        return float(values[0]["value"][1]) if values else None

    # The workers' own counters and the broker's plugin agree on what happened: seven emails
    # sent, three consumers on the queue.
    sent = 'sum(email_consumer_events_total{outcome="sent"})'
    consumers = f'rabbitmq_detailed_queue_consumers{{queue="{topology.QUEUE}"}}'
    wait_until(lambda: scraped(sent) == 7.0, timeout_s=STACK_TIMEOUT_S, what=f"{sent} == 7")
    wait_until(lambda: scraped(consumers) == 3.0, timeout_s=STACK_TIMEOUT_S, what=consumers)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own loopback
        return json.load(response)


def test_the_dlq_tools_run_in_a_worker_container(stack: ComposeStack) -> None:
    listed = stack.compose("exec", "-T", "worker", "email-consumer", "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "", f"something was dead-lettered:\n{listed.stdout}"
    readable = stack.compose("exec", "-T", "worker", "email-consumer", "dlq", "list")
    assert readable.returncode == 0, readable.stderr
    assert readable.stdout.strip(), "dlq list printed nothing"


def test_down_v_removes_the_containers_and_the_volumes(stack: ComposeStack) -> None:
    assert stack.volumes(), "the stack has no volumes to remove"
    stack.must("down", "--volumes", "--timeout", "30", timeout_s=STACK_TIMEOUT_S)
    assert stack.states() == {}
    assert stack.volumes() == []
