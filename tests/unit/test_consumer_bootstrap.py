"""The composition root wired with fakes: a delivery goes through the real handler and router."""

from __future__ import annotations

import threading

import pika

from email_consumer import bootstrap
from email_consumer.routing import Ack, Delivery
from email_consumer.settings import ConsumerSettings
from shared import topology
from shared.events import new_user_registered, serialise
from shared.settings import Environment
from tests.support.consumer_fakes import FakeProcessedEvents, FakeSender


def _delivery(body: bytes) -> Delivery:
    return Delivery(1, topology.ROUTING_KEY, pika.BasicProperties(), body, 0.0)


def test_the_worker_built_with_fakes_sends_once_and_acks_a_redelivery() -> None:
    env = Environment({"MAIL_FROM": "Welcome <welcome@example.com>"})
    settings = ConsumerSettings.from_env(env)
    store, sender = FakeProcessedEvents(), FakeSender()
    app = bootstrap.build_worker(settings, threading.Event(), processed=store, sender=sender)
    assert (app.processed, app.sender) == (store, sender)
    body = serialise(
        new_user_registered(
            user_id="0b6f3c52-2f5e-4b35-8d0e-8f2b7f0b7b1a",
            username="alice",
            email="alice@example.com",
            full_name=None,
        )
    )

    assert app.processor.process(_delivery(body)) == Ack()
    assert app.processor.process(_delivery(body)) == Ack(), "a redelivery"
    assert [email.envelope_to for email in sender.sent] == ["alice@example.com"]
    assert [email.envelope_from for email in sender.sent] == ["welcome@example.com"]
    assert (
        app.metrics.registry.get_sample_value(
            "email_consumer_events_total", {"outcome": "duplicate"}
        )
        == 1
    )
