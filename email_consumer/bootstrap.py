"""The composition root: the only place where the worker's adapters are built and wired.

`build_worker` builds the real store and sender unless it is given others (unit tests pass
fakes, tests/unit/test_consumer_bootstrap.py).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Protocol

from email_consumer.breaker import DeadLetterBreaker
from email_consumer.dead_letters import DeadLetterQueue
from email_consumer.handler import WelcomeEmailHandler
from email_consumer.metrics import WorkerMetrics
from email_consumer.ports import EmailSender, ProcessedEvents
from email_consumer.processed_events import SqlProcessedEvents
from email_consumer.processing import DeliveryProcessor
from email_consumer.rendering import WelcomeRenderer
from email_consumer.routing import Router
from email_consumer.settings import ConsumerSettings
from email_consumer.smtp_sender import SmtpEmailSender
from email_consumer.status import WorkerStatus
from email_consumer.worker import Worker
from shared.amqp import connection_parameters
from shared.logging import configure_logging, get_logger
from shared.tracing import configure_tracing

SERVICE = "email_consumer"
# How often the worker deletes processed-event records older than their retention.
HOUSEKEEPING_INTERVAL_S = 3600.0

_log = get_logger(__name__)


class EventStore(ProcessedEvents, Protocol):
    """The processed-events store as the worker's process holds it: also housekeeping, closing."""

    def forget_older_than(self, age_s: float) -> int: ...

    def dispose(self) -> None: ...


class PooledSender(EmailSender, Protocol):
    def close_all(self) -> None: ...


def set_up_logging(settings: ConsumerSettings) -> None:
    configure_logging(settings.logging, service=SERVICE, secrets=settings.secrets())


def set_up_tracing(settings: ConsumerSettings) -> None:
    """The SDK, when an OTEL_* variable asks for tracing (shared/tracing.py); else nothing."""
    configure_tracing(settings.tracing, service=SERVICE)


@dataclass
class WorkerApp:
    worker: Worker
    processor: DeliveryProcessor
    metrics: WorkerMetrics
    status: WorkerStatus
    processed: EventStore
    sender: PooledSender


def check_broker_settings(settings: ConsumerSettings) -> None:
    """Build the AMQP parameters (and TLS context) once, before anything else is opened.

    A malformed URL or an unloadable TLS file raises `ConfigError` here, at start-up, rather
    than on every reconnection attempt of a worker that would never connect.
    """
    connection_parameters(settings.broker)


def build_worker(
    settings: ConsumerSettings,
    stopping: threading.Event,
    *,
    processed: EventStore | None = None,
    sender: PooledSender | None = None,
) -> WorkerApp:
    """Everything `email-consumer run` needs, wired together; the real store and sender unless
    `processed` and `sender` are given."""
    check_broker_settings(settings)
    if processed is None:
        # As many as SMTP sessions: a thread holds one for a claim or a mark of a few
        # milliseconds, between sends that take far longer.
        processed = SqlProcessedEvents.open(
            settings.database_url, connections=settings.worker.concurrency
        )
    if sender is None:
        sender = SmtpEmailSender(settings.smtp, max_connections=settings.worker.concurrency)
    status = WorkerStatus(settings.metrics.liveness_timeout_s)
    metrics = WorkerMetrics(status=status)
    handler = WelcomeEmailHandler(
        renderer=WelcomeRenderer(settings.mail_from),
        sender=sender,
        processed=processed,
        policy=settings.retry,
        claim_lease_s=settings.worker.claim_lease_s,
        uncertain_resend_after_s=settings.worker.uncertain_resend_after_s,
        stopping=stopping,
    )
    processor = DeliveryProcessor(
        handle=handler.handle,
        router=Router(
            policy=settings.retry,
            host=socket.gethostname(),
            breaker_probe_s=settings.worker.breaker_probe_s,
            uncertain_resend_after_s=settings.worker.uncertain_resend_after_s,
        ),
        breaker=DeadLetterBreaker(
            threshold=settings.worker.breaker_threshold,
            probe_interval_s=settings.worker.breaker_probe_s,
        ),
        metrics=metrics,
        stopping=stopping,
    )
    worker = Worker(
        broker=settings.broker,
        settings=settings.worker,
        processor=processor,
        metrics=metrics,
        stopping=stopping,
        housekeeping=lambda: forget_old_events(processed, settings.worker.processed_retention_s),
        housekeeping_interval_s=HOUSEKEEPING_INTERVAL_S,
        status=status,
    )
    return WorkerApp(
        worker=worker,
        processor=processor,
        metrics=metrics,
        status=status,
        processed=processed,
        sender=sender,
    )


def forget_old_events(processed: EventStore, retention_s: float) -> None:
    deleted = processed.forget_older_than(retention_s)
    _log.info("old processed-event records deleted", count=deleted, retention_s=retention_s)


def build_dead_letter_queue(settings: ConsumerSettings) -> DeadLetterQueue:
    check_broker_settings(settings)
    return DeadLetterQueue(settings.broker, settings.retry.broker_delays_s)
