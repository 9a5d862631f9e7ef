"""Dramatiq as the peer: its broker with publisher confirms, and the welcome actor.

`configure` is what the Dramatiq command runs in the worker process
(`python -m dramatiq bench.dramatiq_peer:configure --processes 1 --threads N`); the harness
calls `build_actor` to publish with `send`. Nothing happens at import time.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench.welcome_job import WelcomeSender

ACTOR_NAME = "send_welcome"
QUEUE_NAME = "welcome"


def build_actor(amqp_url: str, *, confirm_delivery: bool = True) -> Any:
    """A broker for `amqp_url` and the welcome actor declared on it (its job is a no-op here:
    the publishing process only sends)."""
    broker = RabbitmqBroker(url=amqp_url, confirm_delivery=confirm_delivery)
    return dramatiq.actor(broker=broker, actor_name=ACTOR_NAME, queue_name=QUEUE_NAME)(
        _not_run_here
    )


def _not_run_here(event: dict[str, Any]) -> None:
    raise AssertionError("the publishing process never runs the actor")


def configure() -> None:
    """Set up the Dramatiq worker process from BENCH_AMQP_URL, SMTP_HOST and SMTP_PORT."""
    broker = RabbitmqBroker(url=os.environ["BENCH_AMQP_URL"], confirm_delivery=True)
    dramatiq.set_broker(broker)
    sender = WelcomeSender(os.environ["SMTP_HOST"], int(os.environ["SMTP_PORT"]))

    def send_welcome(event: dict[str, Any]) -> None:
        sender.send(event)

    dramatiq.actor(broker=broker, actor_name=ACTOR_NAME, queue_name=QUEUE_NAME)(send_welcome)
