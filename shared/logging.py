"""Structured logging through structlog, for the services' own lines and the libraries' alike.

JSON lines when stderr is not a terminal (containers, CI), readable colour on a terminal.
Standard-library loggers (pika, SQLAlchemy, tenacity) go through the same processors, so every
line has one shape. With tracing on, a line written inside a span names its `trace_id` and
`span_id`. Secrets registered at set-up are replaced wherever they would appear.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from shared.settings import LoggingSettings

REDACTED = "***"
# Third-party loggers whose lines only repeat, at length and with tracebacks, a failure that our
# own code catches and logs once with its reason (a broker that is down gave 7 ERROR lines and a
# traceback per connection attempt). They are shown only with LOG_LEVEL=DEBUG.
QUIET_LIBRARIES = ("pika",)


class SecretRedactor:
    """A structlog processor that replaces every registered secret in every string value."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Very short "secrets" (say, a one-letter password) would redact ordinary words.
        self._secrets = sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True)

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        if not self._secrets:
            return event_dict
        for key, value in event_dict.items():
            event_dict[key] = self._redact(value)
        return event_dict

    def redact_text(self, text: str) -> str:
        redacted: str = self._redact(text)
        return redacted

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {key: self._redact(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact(item) for item in value]
        return value


def configure_logging(
    settings: LoggingSettings, *, service: str, secrets: Iterable[str] = ()
) -> None:
    """Configure structlog and the standard library; call once from a composition root."""
    global _active_redactor
    _active_redactor = SecretRedactor(secrets)
    shared_processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service),
        _add_trace_ids(),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        # Last before rendering, so exception text and library messages are redacted too.
        _active_redactor,
    ]
    if _use_json(settings):
        renderer: Processor = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared_processors,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared_processors,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = _CurrentStderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(
            logging.DEBUG if root.level <= logging.DEBUG else logging.CRITICAL
        )


_active_redactor = SecretRedactor()


def redact(text: str) -> str:
    """`text` with the secrets given to `configure_logging` masked (for lines not logged)."""
    return _active_redactor.redact_text(text)


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a line is logged, not when logging was set up.

    A live display (rich's progress bars for `simulate`) replaces `sys.stderr` while it runs, so
    that log lines are printed above the bars instead of through them.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass  # always the current sys.stderr


def _use_json(settings: LoggingSettings) -> bool:
    if settings.format == "auto":
        return not sys.stderr.isatty()
    return settings.format == "json"


def _add_service(service: str) -> Processor:
    def add(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add


def _add_trace_ids() -> Processor:
    """Adds `trace_id` and `span_id` of the current span or trace context, when there is one
    (only with tracing on: then spans are current, or `shared.tracing.within` a stored one).

    Imported here, at set-up: the commands that never log (`health`) skip the import.
    """
    from opentelemetry import trace

    def add(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            event_dict.setdefault("trace_id", trace.format_trace_id(span_context.trace_id))
            event_dict.setdefault("span_id", trace.format_span_id(span_context.span_id))
        return event_dict

    return add


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


@contextmanager
def event_context(event_id: str, correlation_id: str | None = None) -> Iterator[None]:
    """Bind `event_id` and `correlation_id` to every log line written inside the block."""
    context: MutableMapping[str, Any] = {"event_id": event_id}
    if correlation_id is not None:
        context["correlation_id"] = correlation_id
    with structlog.contextvars.bound_contextvars(**context):
        yield
