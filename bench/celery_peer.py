"""Celery as the peer: an app whose publishes wait for the broker's confirm."""

from __future__ import annotations

from typing import Any

from celery import Celery

TASK_NAME = "bench.send_welcome"


def build_task(amqp_url: str) -> Any:
    """The welcome task of a Celery app on `amqp_url`, publishing with `confirm_publish`."""
    app = Celery("bench", broker=amqp_url, set_as_current=False)
    app.conf.update(
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        # Messages persistent, as every other publisher here.
        task_default_delivery_mode="persistent",
    )

    @app.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
    def send_welcome(event: dict[str, Any]) -> None:
        raise AssertionError("the publishing process never runs the task")

    return send_welcome
