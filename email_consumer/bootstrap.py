"""The composition root: the only place where the worker's real adapters are built and wired."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from email_consumer.dead_letters import DeadLetterQueue
from email_consumer.handler import WelcomeEmailHandler
from email_consumer.metrics import WorkerMetrics
from email_consumer.processed_events import SqlProcessedEvents
from email_consumer.rendering import WelcomeRenderer
from email_consumer.settings import ConsumerSettings
from email_consumer.smtp_sender import SmtpEmailSender
from email_consumer.worker import Worker
from shared.logging import configure_logging

SERVICE = "email_consumer"


def set_up_logging(settings: ConsumerSettings) -> None:
    configure_logging(settings.logging, service=SERVICE, secrets=settings.secrets())


@dataclass
class WorkerApp:
    worker: Worker
    metrics: WorkerMetrics
    processed: SqlProcessedEvents
    sender: SmtpEmailSender


def build_worker(settings: ConsumerSettings, stopping: threading.Event) -> WorkerApp:
    """Everything `email-consumer run` needs, wired together."""
    processed = SqlProcessedEvents.open(settings.database_url)
    sender = SmtpEmailSender(settings.smtp)
    metrics = WorkerMetrics()
    handler = WelcomeEmailHandler(
        renderer=WelcomeRenderer(settings.mail_from),
        sender=sender,
        processed=processed,
        policy=settings.retry,
        claim_lease_s=settings.worker.claim_lease_s,
        stopping=stopping,
    )
    worker = Worker(
        broker=settings.broker,
        settings=settings.worker,
        policy=settings.retry,
        handler=handler,
        metrics=metrics,
        stopping=stopping,
    )
    return WorkerApp(worker=worker, metrics=metrics, processed=processed, sender=sender)


def build_dead_letter_queue(settings: ConsumerSettings) -> DeadLetterQueue:
    return DeadLetterQueue(settings.broker, settings.retry.broker_delays_s)
